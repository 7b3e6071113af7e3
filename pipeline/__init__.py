"""The stream processor: usage events and credit commands in, the credit ledger out.

The batch logic (``core``), the exactly-once protocol (``sink``) and its liveness stop
(``liveness``), the restore check and repair (``restore``, ``restore_check``) and the
event-id store (``id_store``) speak to the engine and
to the stream runtime only through ``ports``. faust lives behind one door, ``runtime``; the
worker (``worker``) is the composition root that joins them.

May import: ``metering``; only ``worker`` imports ``runtime``.
"""
