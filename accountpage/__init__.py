"""The account page and its JSON API (``/v1/me``, ``/v1/usage``), served next to the
sidecar's balance API: a composition root of the Redis projection (balances), the sidecar and
ClickHouse (usage).

May import: ``metering``, ``projections``, ``consumers``; no other package imports it.
"""
