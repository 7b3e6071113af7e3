"""What every component shares: the credit engine (``domain``), the Avro contracts and codecs
(``avro``), the producer SDK (``sdk``), the shipped price book and plans (``data``), and the
plumbing: settings (``config``: every ``METERING_*`` variable), topic names and creation
(``topics``), the DLQ writer (``dlq``), read-to-end (``topic_reader``), API keys (``auth``),
``free_port`` (``net``) and file watching (``filewatch``).

May import: only itself and ``schemas``; ``domain`` imports nothing outside itself (no I/O).
"""
