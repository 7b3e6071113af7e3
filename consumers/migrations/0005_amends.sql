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

-- The corrections view of 0004, telling voids from amends: `kind` and, for an amend, the
-- credits of its new charge (`credits_charged`, its USAGE_DEBIT and OVERAGE entries, whose ids
-- are `{command}:USAGE_DEBIT:{event}` and `{command}:OVERAGE:{event}`).
DROP VIEW IF EXISTS corrections;

CREATE VIEW IF NOT EXISTS corrections AS
SELECT
    r.account_id AS account_id,
    r.event_id AS event_id,
    r.command_id AS command_id,
    if(a.entries > 0, 'amend', 'void') AS kind,
    r.credits_returned AS credits_returned,
    r.overage_returned AS overage_returned,
    toInt64(if(a.entries > 0, a.charged, 0)) AS credits_charged,
    r.reason AS reason,
    r.subject AS subject,
    r.feature AS feature,
    r.model AS model,
    r.event_occurred_at AS event_occurred_at,
    r.recorded_at AS recorded_at,
    r.seq AS seq
FROM
(
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
    WHERE type = 'USAGE_REVERSED'
) AS r
LEFT JOIN
(
    SELECT
        account_id,
        cause_id AS event_id,
        replaceRegexpOne(entry_id, ':(USAGE_DEBIT|OVERAGE):.*$', '') AS command_id,
        -sum(amount) AS charged,
        count() AS entries
    FROM ledger_entries
    WHERE reason = 'amended' AND type IN ('USAGE_DEBIT', 'OVERAGE')
    GROUP BY account_id, event_id, command_id
) AS a
ON r.account_id = a.account_id AND r.event_id = a.event_id AND r.command_id = a.command_id;
