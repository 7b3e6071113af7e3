-- Daily rollup by (account, subject, feature, model, day), fed by two materialized views.
-- Rows are partial sums until merged: always read it with sum()/sumMap() and GROUP BY.

CREATE TABLE IF NOT EXISTS usage_daily
(
    account_id      String,
    subject         LowCardinality(String),
    feature         LowCardinality(String),
    model           LowCardinality(String),
    day             Date,
    credits         Int64 COMMENT 'micro-credits spent (USAGE_DEBIT + OVERAGE), positive',
    overage_credits Int64 COMMENT 'micro-credits spent as OVERAGE, positive',
    ledger_entries  UInt64,
    events          UInt64,
    units           SimpleAggregateFunction(sumMap, Map(String, Int64))
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (account_id, subject, feature, model, day)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_daily_events_mv TO usage_daily AS
SELECT
    account_id,
    subject,
    feature,
    model,
    toDate(occurred_at) AS day,
    toInt64(0) AS credits,
    toInt64(0) AS overage_credits,
    toUInt64(0) AS ledger_entries,
    count() AS events,
    sumMap(units) AS units
FROM usage_events
GROUP BY account_id, subject, feature, model, day;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_daily_credits_mv TO usage_daily AS
SELECT
    account_id,
    subject,
    feature,
    model,
    toDate(occurred_at) AS day,
    toInt64(-sum(amount)) AS credits,
    toInt64(-sumIf(amount, type = 'OVERAGE')) AS overage_credits,
    count() AS ledger_entries,
    toUInt64(0) AS events,
    CAST(map(), 'Map(String, Int64)') AS units
FROM ledger_entries
WHERE type IN ('USAGE_DEBIT', 'OVERAGE')
GROUP BY account_id, subject, feature, model, day;
