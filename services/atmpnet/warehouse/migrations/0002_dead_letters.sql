-- Records the processors rejected: what arrived (key, value, headers' source), and why.
-- One row per source record: a re-delivered bad record has the same (topic, partition, offset)
-- and collapses; read with FINAL.

CREATE TABLE IF NOT EXISTS dead_letters
(
    topic LowCardinality(String),
    `partition` Int32,
    `offset` Int64,
    received_at DateTime64(6, 'UTC'),
    reason_code LowCardinality(String),
    reason String,
    schema_id Nullable(UInt32),
    event_id Nullable(UUID),
    site_id Nullable(String),
    `key` Nullable(String),
    value String CODEC(ZSTD(1)),
    traceparent Nullable(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, `partition`, `offset`);
