-- Corrections (void_usage): a USAGE_REVERSED entry nets into the voided event's own row and
-- day of usage_daily, so the tables by subject are right after a correction.
--
-- The entry's amount is the credits given back (debit and overage): credits drop by it,
-- overage_credits by its overage part (amount minus what went back to grants), and the event
-- no longer counts as accepted (voided_events, subtracted in the view). Its units stay in
-- `units`: the records were received. The `corrections` view lists each correction.

ALTER TABLE usage_daily_totals
    ADD COLUMN IF NOT EXISTS voided_events UInt64 COMMENT 'usage events voided (USAGE_REVERSED)'
    AFTER events;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_daily_totals_reversed_mv TO usage_daily_totals AS
SELECT
    account_id,
    subject,
    feature,
    model,
    toDate(occurred_at) AS day,
    toInt64(-sum(amount)) AS credits,
    toInt64(-sum(amount - arraySum(allocations.amount))) AS overage_credits,
    toUInt64(0) AS ledger_entries,
    toUInt64(0) AS events,
    toUInt64(count()) AS voided_events,
    toUInt64(0) AS rejected_events,
    toUInt64(0) AS usage_records,
    CAST(map(), 'Map(String, Int64)') AS units_recorded
FROM ledger_entries
WHERE type = 'USAGE_REVERSED'
GROUP BY account_id, subject, feature, model, day;

CREATE VIEW IF NOT EXISTS corrections AS
SELECT
    account_id,
    arrayElement(splitByString(':USAGE_REVERSED:', entry_id), 2) AS event_id,
    cause_id AS command_id,
    amount AS credits_returned,
    amount - arraySum(allocations.amount) AS overage_returned,
    reason,
    subject,
    feature,
    model,
    occurred_at AS event_occurred_at,
    recorded_at,
    seq
FROM ledger_entries
WHERE type = 'USAGE_REVERSED';

-- The view of 0003, now netting voided events.
DROP VIEW IF EXISTS usage_daily;

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
    toInt64(sum(events)) - toInt64(sum(voided_events)) AS events,
    sum(rejected_events) AS rejected_events,
    sum(usage_records) AS usage_records,
    mapFilter((k, v) -> v != 0, sumMap(units)) AS units
FROM
(
    SELECT
        account_id, subject, feature, model, day, credits, overage_credits, ledger_entries,
        events, voided_events, rejected_events, usage_records, units_recorded AS units
    FROM usage_daily_totals
    UNION ALL
    SELECT
        account_id, subject, feature, model, day, toInt64(0), toInt64(0), toUInt64(0),
        toUInt64(0), toUInt64(0), toUInt64(0), toUInt64(0),
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
