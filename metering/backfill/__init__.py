"""``metering backfill FILE``: load historical usage through the same path as live events.

Two passes over the file, so nothing is published before the whole file is known:

1. :mod:`metering.backfill.scan` reads every record (:mod:`metering.backfill.source`: JSON Lines
   or an Avro container), validates and encodes it as the SDK does, prices it with the
   processor's price book, and refuses up front what the pipeline would never charge: invalid
   or unpriceable records, and events outside the window (:mod:`metering.backfill.window`). It
   counts duplicates inside the file and totals the rest per account and subject (what
   ``--dry-run`` prints). The accepted events wait, encoded, in a temporary file
   (:mod:`metering.backfill.spill`).
2. :mod:`metering.backfill.cli` sends them with the SDK's producer, throttled to ``--rate``,
   behind a progress bar.

A re-run publishes the same event ids again; the processor's idempotency store answers them as
duplicates, so a file loaded twice is charged once.

May import: ``metering`` (settings, topics), ``metering.avro`` (the codec),
``metering.domain`` (the price book) and ``metering.sdk`` (validation, encoding, the producer).
"""
