"""ClickHouse: the sink from Kafka (``sink``), the schema (``migrations``), the usage queries
(``queries``), the ledger audit and ``metering reconcile`` (``ledger_audit``, ``reconcile``).

May import: ``metering``, and ``projections`` (reconcile reads the Redis projection).
"""
