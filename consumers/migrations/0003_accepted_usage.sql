-- usage_daily counts ACCEPTED usage events, each once: the ledger decides which were accepted.
--
-- 0002 counted Kafka records of usage-events: an event sent twice counted twice, and an event the
-- processor dead-lettered or rejected still added its units. From here on:
--   * usage_daily_totals (SummingMergeTree, fed by materialized views) holds per (account,
--     subject, feature, model, day) the ledger's credits and accepted events (one marker per
--     accepted event: its USAGE_DEBIT, else its OVERAGE), and the units of every usage record
--     received;
--   * usage_event_balance (VersionedCollapsingMergeTree) gets a +1 row per usage record (with its
--     units) and a -1 row per accepted marker. Merges cancel +1/-1 pairs of one event, in
--     whatever order they arrived, so what stays is a re-sent copy, a record the ledger never
--     accepted (dead-lettered, rejected, or not processed yet), or a marker whose record is not
--     inserted yet;
--   * usage_daily becomes a VIEW: the totals, minus the units of each event's records beyond
--     the one the ledger accepted (all of them when it accepted none).
-- Nothing joins the two topics at insert time, so the order in which the sink inserts the
-- usage_events and ledger_entries batches does not matter. docs/clickhouse.md says what every
-- column counts.
--
-- Apply with the sinks stopped (`metering run sink --migrate` migrates before it consumes): the
-- backfill at the end reads the history tables once. Re-running an interrupted migration
-- truncates the new tables and backfills again.

DROP VIEW IF EXISTS usage_daily_events_mv;

DROP VIEW IF EXISTS usage_daily_credits_mv;

-- The 0002 table (or, on a re-run, the view this migration creates at its end).
DROP TABLE IF EXISTS usage_daily;

CREATE TABLE IF NOT EXISTS usage_daily_totals
(
    account_id      String,
    subject         LowCardinality(String),
    feature         LowCardinality(String),
    model           LowCardinality(String),
    day             Date,
    credits         Int64 COMMENT 'micro-credits spent: -amount of USAGE_DEBIT and OVERAGE entries',
    overage_credits Int64 COMMENT 'micro-credits spent as OVERAGE: -amount of OVERAGE entries',
    ledger_entries  UInt64 COMMENT 'USAGE_DEBIT and OVERAGE entries',
    events          UInt64 COMMENT 'accepted usage events (one marker each)',
    rejected_events UInt64 COMMENT 'USAGE_REJECTED entries of records that got no debit or overage',
    usage_records   UInt64 COMMENT 'usage-events records received, re-sent copies included',
    units_recorded  SimpleAggregateFunction(sumMap, Map(String, Int64))
        COMMENT 'units of every usage record received'
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (account_id, subject, feature, model, day)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS usage_event_balance
(
    account_id  String,
    day         Date,
    subject     LowCardinality(String),
    feature     LowCardinality(String),
    model       LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    event_id    String,
    sign        Int8 COMMENT '+1: a usage record received; -1: the ledger accepted the event',
    version     UInt8 COMMENT 'always 1: any +1 row of an event cancels with its -1 row',
    units       Map(String, Int64) COMMENT 'units of the record; empty on a -1 row'
)
ENGINE = VersionedCollapsingMergeTree(sign, version)
PARTITION BY toYYYYMM(day)
ORDER BY (account_id, day, subject, feature, model, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- The ledger's usage entries, flagged (a Null table: nothing stored); it feeds the tables above
-- and ledger_usage_tail.
CREATE TABLE IF NOT EXISTS ledger_usage_stream
(
    account_id  String,
    seq         Int64,
    subject     LowCardinality(String),
    feature     LowCardinality(String),
    model       LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    cause_id    String,
    type        LowCardinality(String),
    amount      Int64,
    is_accepted UInt8 COMMENT '1: the accepted marker of its event',
    is_rejected UInt8 COMMENT '1: a USAGE_REJECTED of a record that got no debit or overage'
)
ENGINE = Null;

-- Per account, the last usage entry of each ledger insert (merges keep the latest): where an
-- insert starting with an OVERAGE or USAGE_REJECTED finds the entry just before it.
CREATE TABLE IF NOT EXISTS ledger_usage_tail
(
    account_id String,
    seq        Int64,
    type       LowCardinality(String),
    cause_id   String
)
ENGINE = ReplacingMergeTree(seq)
ORDER BY account_id
SETTINGS non_replicated_deduplication_window = 1000;

TRUNCATE TABLE IF EXISTS usage_daily_totals;

TRUNCATE TABLE IF EXISTS usage_event_balance;

TRUNCATE TABLE IF EXISTS ledger_usage_tail;

-- Usage records as received. A subject '' is the processor's 'default' (as in the ledger).
CREATE MATERIALIZED VIEW IF NOT EXISTS usage_daily_totals_records_mv TO usage_daily_totals AS
SELECT
    account_id,
    if(subject = '', 'default', subject) AS subject,
    feature,
    model,
    toDate(occurred_at) AS day,
    toInt64(0) AS credits,
    toInt64(0) AS overage_credits,
    toUInt64(0) AS ledger_entries,
    toUInt64(0) AS events,
    toUInt64(0) AS rejected_events,
    count() AS usage_records,
    sumMap(units) AS units_recorded
FROM usage_events
GROUP BY account_id, subject, feature, model, day;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_event_balance_records_mv TO usage_event_balance AS
SELECT
    account_id,
    toDate(occurred_at) AS day,
    if(subject = '', 'default', subject) AS subject,
    feature,
    model,
    occurred_at,
    event_id,
    toInt8(1) AS sign,
    toUInt8(1) AS version,
    units
FROM usage_events;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_daily_totals_ledger_mv TO usage_daily_totals AS
SELECT
    account_id,
    subject,
    feature,
    model,
    toDate(occurred_at) AS day,
    toInt64(-sumIf(amount, type != 'USAGE_REJECTED')) AS credits,
    toInt64(-sumIf(amount, type = 'OVERAGE')) AS overage_credits,
    countIf(type != 'USAGE_REJECTED') AS ledger_entries,
    toUInt64(sum(is_accepted)) AS events,
    toUInt64(sum(is_rejected)) AS rejected_events,
    toUInt64(0) AS usage_records,
    CAST(map(), 'Map(String, Int64)') AS units_recorded
FROM ledger_usage_stream
GROUP BY account_id, subject, feature, model, day;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_event_balance_ledger_mv TO usage_event_balance AS
SELECT
    account_id,
    toDate(occurred_at) AS day,
    subject,
    feature,
    model,
    occurred_at,
    cause_id AS event_id,
    toInt8(-1) AS sign,
    toUInt8(1) AS version,
    CAST(map(), 'Map(String, Int64)') AS units
FROM ledger_usage_stream
WHERE is_accepted = 1;

-- Downstream of the flags, so an insert's lookups see the tail as it was before that insert.
CREATE MATERIALIZED VIEW IF NOT EXISTS ledger_usage_tail_mv TO ledger_usage_tail AS
SELECT account_id, last_seq AS seq, last_type AS type, last_cause AS cause_id
FROM
(
    SELECT
        account_id,
        max(seq) AS last_seq,
        argMax(type, seq) AS last_type,
        argMax(cause_id, seq) AS last_cause
    FROM ledger_usage_stream
    GROUP BY account_id
);

-- One event's usage entries are consecutive in seq: USAGE_DEBIT (when grants paid anything, or
-- the price is 0), then OVERAGE, then USAGE_REJECTED. An OVERAGE or USAGE_REJECTED "follows
-- usage" when the entry at seq - 1 is a USAGE_DEBIT or OVERAGE of the same cause_id: in the
-- inserted block (the window) or, when the block starts with it, the last usage entry of the
-- account's previous insert (ledger_usage_tail). One account's entries are in one partition, in
-- seq order, and the sink inserts a partition's ranges one after the other.
CREATE MATERIALIZED VIEW IF NOT EXISTS ledger_usage_stream_mv TO ledger_usage_stream AS
SELECT
    account_id,
    seq,
    subject,
    feature,
    model,
    occurred_at,
    cause_id,
    type,
    amount,
    toUInt8(type != 'USAGE_REJECTED' AND NOT follows_usage) AS is_accepted,
    toUInt8(type = 'USAGE_REJECTED' AND NOT follows_usage) AS is_rejected
FROM
(
    SELECT
        *,
        type != 'USAGE_DEBIT' AND (
            (prev_seq = seq - 1 AND prev_cause = cause_id
                AND prev_type IN ('USAGE_DEBIT', 'OVERAGE'))
            OR (account_id, seq - 1, cause_id) IN (
                SELECT account_id, seq, cause_id FROM ledger_usage_tail
                WHERE type IN ('USAGE_DEBIT', 'OVERAGE') AND account_id IN (
                    SELECT account_id FROM ledger_entries
                    WHERE type IN ('OVERAGE', 'USAGE_REJECTED'))))
            AS follows_usage
    FROM
    (
        SELECT
            account_id, seq, type, amount, cause_id, subject, feature, model, occurred_at,
            lagInFrame(seq, 1, toInt64(-1)) OVER w AS prev_seq,
            lagInFrame(type) OVER w AS prev_type,
            lagInFrame(cause_id) OVER w AS prev_cause
        FROM ledger_entries
        WINDOW w AS (PARTITION BY account_id ORDER BY seq ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
    )
    WHERE type IN ('USAGE_DEBIT', 'OVERAGE', 'USAGE_REJECTED')
);

-- Backfill: the history so far, by the queries of the views above (over the whole table, the
-- window finds every predecessor).
INSERT INTO usage_daily_totals
SELECT
    account_id,
    if(subject = '', 'default', subject) AS subject,
    feature,
    model,
    toDate(occurred_at) AS day,
    toInt64(0) AS credits,
    toInt64(0) AS overage_credits,
    toUInt64(0) AS ledger_entries,
    toUInt64(0) AS events,
    toUInt64(0) AS rejected_events,
    count() AS usage_records,
    sumMap(units) AS units_recorded
FROM usage_events
GROUP BY account_id, subject, feature, model, day;

INSERT INTO usage_event_balance
SELECT
    account_id,
    toDate(occurred_at) AS day,
    if(subject = '', 'default', subject) AS subject,
    feature,
    model,
    occurred_at,
    event_id,
    toInt8(1) AS sign,
    toUInt8(1) AS version,
    units
FROM usage_events;

INSERT INTO ledger_usage_stream
SELECT
    account_id,
    seq,
    subject,
    feature,
    model,
    occurred_at,
    cause_id,
    type,
    amount,
    toUInt8(type != 'USAGE_REJECTED' AND NOT follows_usage) AS is_accepted,
    toUInt8(type = 'USAGE_REJECTED' AND NOT follows_usage) AS is_rejected
FROM
(
    SELECT
        *,
        type != 'USAGE_DEBIT' AND (
            (prev_seq = seq - 1 AND prev_cause = cause_id
                AND prev_type IN ('USAGE_DEBIT', 'OVERAGE'))
            OR (account_id, seq - 1, cause_id) IN (
                SELECT account_id, seq, cause_id FROM ledger_usage_tail
                WHERE type IN ('USAGE_DEBIT', 'OVERAGE') AND account_id IN (
                    SELECT account_id FROM ledger_entries
                    WHERE type IN ('OVERAGE', 'USAGE_REJECTED'))))
            AS follows_usage
    FROM
    (
        SELECT
            account_id, seq, type, amount, cause_id, subject, feature, model, occurred_at,
            lagInFrame(seq, 1, toInt64(-1)) OVER w AS prev_seq,
            lagInFrame(type) OVER w AS prev_type,
            lagInFrame(cause_id) OVER w AS prev_cause
        FROM ledger_entries
        WINDOW w AS (PARTITION BY account_id ORDER BY seq ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
    )
    WHERE type IN ('USAGE_DEBIT', 'OVERAGE', 'USAGE_REJECTED')
);

-- What analysts read: one row per (account, subject, feature, model, day). The totals, minus the
-- units of each event's records beyond the one the ledger accepted: an event whose +1 rows
-- outnumber its -1 rows by n loses n records' units. Once ClickHouse has merged the parts, such
-- events are the only rows left in usage_event_balance, so the view stays about as fast as the
-- totals table.
CREATE VIEW IF NOT EXISTS usage_daily AS
SELECT
    account_id,
    subject,
    feature,
    model,
    day,
    sum(credits) AS credits,
    sum(overage_credits) AS overage_credits,
    sum(ledger_entries) AS ledger_entries,
    sum(events) AS events,
    sum(rejected_events) AS rejected_events,
    sum(usage_records) AS usage_records,
    mapFilter((k, v) -> v != 0, sumMap(units)) AS units
FROM
(
    SELECT
        account_id, subject, feature, model, day, credits, overage_credits, ledger_entries,
        events, rejected_events, usage_records, units_recorded AS units
    FROM usage_daily_totals
    UNION ALL
    SELECT
        account_id, subject, feature, model, day, toInt64(0), toInt64(0), toUInt64(0),
        toUInt64(0), toUInt64(0), toUInt64(0),
        mapApply((k, v) -> (k, -v * extra), one_record)
    FROM
    (
        SELECT
            account_id, subject, feature, model, day,
            toInt64(sum(sign)) AS extra,
            max(units) AS one_record
        FROM usage_event_balance
        GROUP BY account_id, subject, feature, model, day, occurred_at, event_id
        HAVING extra > 0
    )
)
GROUP BY account_id, subject, feature, model, day;
