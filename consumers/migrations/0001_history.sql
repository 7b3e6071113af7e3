-- Append-only history: one row per Kafka record, never updated.
-- non_replicated_deduplication_window keeps the block ids the sink's insert_deduplication_token
-- relies on; without it a plain MergeTree ignores the token and a replayed batch would duplicate.

CREATE TABLE IF NOT EXISTS usage_events
(
    event_id        String,
    account_id      String,
    subject         LowCardinality(String),
    feature         LowCardinality(String),
    model           LowCardinality(String) COMMENT 'empty string when the event has no model',
    units           Map(String, Int64),
    occurred_at     DateTime64(3, 'UTC'),
    source          LowCardinality(String),
    attributes      Map(String, String),
    reservation_id  Nullable(String),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (account_id, subject, occurred_at)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS ledger_entries
(
    entry_id                  String,
    account_id                String,
    seq                       Int64,
    type                      LowCardinality(String),
    amount                    Int64 COMMENT 'micro-credits, signed: added > 0, spent < 0',
    allocations               Nested(grant_id String, amount Int64),
    balance_after             Int64,
    overage_after             Int64,
    cause_id                  String,
    subject                   LowCardinality(String) COMMENT 'empty string when not set',
    feature                   LowCardinality(String) COMMENT 'empty string when not set',
    model                     LowCardinality(String) COMMENT 'empty string when not set',
    price_version             LowCardinality(String) COMMENT 'empty string when not set',
    occurred_at               DateTime64(3, 'UTC'),
    recorded_at               DateTime64(3, 'UTC'),
    period_start              DateTime64(3, 'UTC'),
    period_end                DateTime64(3, 'UTC'),
    reason                    Nullable(String),
    reservation_id            Nullable(String),
    grant_id                  Nullable(String),
    grant_source              Nullable(String),
    grant_amount              Nullable(Int64),
    grant_priority            Nullable(Int32),
    grant_effective_at        Nullable(DateTime64(3, 'UTC')),
    grant_expires_at          Nullable(DateTime64(3, 'UTC')),
    grant_cost_basis_micros   Nullable(Int64),
    terms_plan_id             Nullable(String),
    terms_overage_policy      Nullable(String),
    terms_overage_limit       Nullable(Int64),
    terms_features            Array(String),
    terms_features_restricted Bool COMMENT 'false: terms_features is ignored, every feature allowed',
    terms_monthly_credits     Nullable(Int64),
    kafka_partition           UInt32,
    kafka_offset              UInt64,
    ingested_at               DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (account_id, seq)
SETTINGS non_replicated_deduplication_window = 1000;
