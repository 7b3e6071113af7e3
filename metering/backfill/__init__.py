"""``metering backfill FILE``: load historical usage through the same path as live events.

Two passes over the file, so nothing is published before the whole file is known:

1. :mod:`metering.backfill.scan` reads every record (:mod:`metering.backfill.source`: JSON Lines
   or an Avro container), validates it as the SDK does, prices it with the processor's price
   book, and refuses up front what the pipeline would never charge: invalid or unpriceable
   records, and events outside the correction window (:mod:`metering.backfill.window`). It
   counts duplicates inside the file and totals the rest per account and subject (what
   ``--dry-run`` prints).
2. :mod:`metering.backfill.cli` publishes the accepted events with the SDK's producer,
   throttled to ``--rate``, behind a progress bar.

A re-run publishes the same event ids again; the processor's idempotency store answers them as
duplicates, so a file loaded twice is charged once.

May import: ``metering`` (settings, topics), ``metering.domain`` (the price book) and
``metering.sdk`` (validation, the producer).
"""
