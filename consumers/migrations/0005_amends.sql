-- Corrections (amend_usage): an amend is a USAGE_REVERSED entry (0004: the old charge netted
-- out, the event counted in voided_events) followed by the new charge, usage entries whose
-- cause_id is the event and whose reason is 'amended'. In usage_daily_totals the new charge
-- counts like any usage (credits, and its marker adds the event back to `events`). It must not
-- add a second -1 row to usage_event_balance: the event's record already cancelled with its
-- first marker, and a stray -1 would hide a re-sent copy of the record from the view.
--
-- Apply with the sinks stopped (`metering run sink --migrate`): the views are re-created.

ALTER TABLE ledger_usage_stream
    ADD COLUMN IF NOT EXISTS is_amend UInt8 DEFAULT 0
    COMMENT '1: a usage entry of amend_usage (reason = amended)';

DROP VIEW IF EXISTS usage_event_balance_ledger_mv;

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
WHERE is_accepted = 1 AND is_amend = 0;

-- The view of 0003, flagging amends.
DROP VIEW IF EXISTS ledger_usage_stream_mv;

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
    toUInt8(type = 'USAGE_REJECTED' AND NOT follows_usage) AS is_rejected,
    toUInt8(ifNull(reason, '') = 'amended') AS is_amend
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
            account_id, seq, type, amount, cause_id, subject, feature, model, occurred_at, reason,
            lagInFrame(seq, 1, toInt64(-1)) OVER w AS prev_seq,
            lagInFrame(type) OVER w AS prev_type,
            lagInFrame(cause_id) OVER w AS prev_cause
        FROM ledger_entries
        WINDOW w AS (PARTITION BY account_id ORDER BY seq ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
    )
    WHERE type IN ('USAGE_DEBIT', 'OVERAGE', 'USAGE_REJECTED')
);
