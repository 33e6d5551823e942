-- The event store: the durable system of record, one table per event family.
--
-- Every table is a ReplacingMergeTree sorted by (site_id, event_id): a replayed event has the
-- same sorting key, so its rows collapse on merge. Until a merge happens duplicates can still be
-- on disk, so every read uses FINAL (or GROUP BY event_id); then a replay leaves exactly one row
-- per event id in every query. No version column: duplicates of one event id carry the same
-- event, and the row inserted last is kept.
--
-- Common columns (same order in every table):
--   envelope fields flattened; site_id is '' when the event has none (baselines; it is in the
--   sorting key, which may not be Nullable); producer.* as producer_*; schema_version is the
--   envelope's, schema_id the wire-format id the record was written with;
--   topic/partition/offset say where the record was read; ingested_at when it was written here;
--   traceparent the W3C trace context from the record's headers; raw the original record bytes
--   (Confluent wire format) kept as evidence of what was received.
-- Then each event's own fields with the model's names; nested records flattened with '_'
-- (results.viable_cell_count -> results_viable_cell_count); component lists as parallel arrays
-- components_kind / _name / _version / _content_hash (same length, same order).
-- Enum symbols are stored as LowCardinality(String): new symbols need no migration.

CREATE TABLE IF NOT EXISTS batch_steps
(
    event_id UUID,
    site_id LowCardinality(String),
    module_id Nullable(String),
    lane Nullable(UInt16),
    batch_id Nullable(String),
    occurred_at DateTime64(6, 'UTC'),
    published_at DateTime64(6, 'UTC'),
    sequence Int64,
    producer_kind LowCardinality(String),
    producer_id String,
    producer_software_version Nullable(String),
    schema_version UInt16,
    schema_id UInt32,
    topic LowCardinality(String),
    `partition` Int32,
    `offset` Int64,
    ingested_at DateTime64(6, 'UTC'),
    traceparent Nullable(String),
    raw String CODEC(ZSTD(1)),

    transition LowCardinality(String),
    step LowCardinality(String),
    product_code LowCardinality(String),
    attempt Int32,
    expected_duration_minutes Nullable(Int32),
    results_viable_cell_count Nullable(Float64),
    results_viability_percent Nullable(Float64),
    results_volume_ml Nullable(Float64),
    failure_reason Nullable(String),
    performed_by Nullable(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (site_id, event_id);

CREATE TABLE IF NOT EXISTS sensor_summaries
(
    event_id UUID,
    site_id LowCardinality(String),
    module_id Nullable(String),
    lane Nullable(UInt16),
    batch_id Nullable(String),
    occurred_at DateTime64(6, 'UTC'),
    published_at DateTime64(6, 'UTC'),
    sequence Int64,
    producer_kind LowCardinality(String),
    producer_id String,
    producer_software_version Nullable(String),
    schema_version UInt16,
    schema_id UInt32,
    topic LowCardinality(String),
    `partition` Int32,
    `offset` Int64,
    ingested_at DateTime64(6, 'UTC'),
    traceparent Nullable(String),
    raw String CODEC(ZSTD(1)),

    window_start DateTime64(6, 'UTC'),
    window_end DateTime64(6, 'UTC'),
    parameter LowCardinality(String),
    unit LowCardinality(String),
    `count` Int64,
    `min` Nullable(Float64),
    `max` Nullable(Float64),
    mean Nullable(Float64),
    stddev Nullable(Float64),
    `last` Nullable(Float64),
    alert_low Nullable(Float64),
    alert_high Nullable(Float64),
    action_low Nullable(Float64),
    action_high Nullable(Float64),
    samples_outside_alert Int64,
    samples_outside_action Int64
)
ENGINE = ReplacingMergeTree
ORDER BY (site_id, event_id);

CREATE TABLE IF NOT EXISTS deviations
(
    event_id UUID,
    site_id LowCardinality(String),
    module_id Nullable(String),
    lane Nullable(UInt16),
    batch_id Nullable(String),
    occurred_at DateTime64(6, 'UTC'),
    published_at DateTime64(6, 'UTC'),
    sequence Int64,
    producer_kind LowCardinality(String),
    producer_id String,
    producer_software_version Nullable(String),
    schema_version UInt16,
    schema_id UInt32,
    topic LowCardinality(String),
    `partition` Int32,
    `offset` Int64,
    ingested_at DateTime64(6, 'UTC'),
    traceparent Nullable(String),
    raw String CODEC(ZSTD(1)),

    deviation_id String,
    transition LowCardinality(String),
    step LowCardinality(Nullable(String)),
    parameter LowCardinality(Nullable(String)),
    observed_value Nullable(Float64),
    unit LowCardinality(Nullable(String)),
    limit_low Nullable(Float64),
    limit_high Nullable(Float64),
    duration_seconds Nullable(Float64),
    detection_source LowCardinality(String),
    raised_by String,
    alarm_code LowCardinality(Nullable(String)),
    description String,
    resolution Nullable(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (site_id, event_id);

CREATE TABLE IF NOT EXISTS module_configs
(
    event_id UUID,
    site_id LowCardinality(String),
    module_id Nullable(String),
    lane Nullable(UInt16),
    batch_id Nullable(String),
    occurred_at DateTime64(6, 'UTC'),
    published_at DateTime64(6, 'UTC'),
    sequence Int64,
    producer_kind LowCardinality(String),
    producer_id String,
    producer_software_version Nullable(String),
    schema_version UInt16,
    schema_id UInt32,
    topic LowCardinality(String),
    `partition` Int32,
    `offset` Int64,
    ingested_at DateTime64(6, 'UTC'),
    traceparent Nullable(String),
    raw String CODEC(ZSTD(1)),

    module_type LowCardinality(String),
    serial_number String,
    lanes UInt16,
    components_kind Array(LowCardinality(String)),
    components_name Array(String),
    components_version Array(String),
    components_content_hash Array(String),
    change_reason Nullable(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (site_id, event_id);

CREATE TABLE IF NOT EXISTS baselines
(
    event_id UUID,
    site_id LowCardinality(String),
    module_id Nullable(String),
    lane Nullable(UInt16),
    batch_id Nullable(String),
    occurred_at DateTime64(6, 'UTC'),
    published_at DateTime64(6, 'UTC'),
    sequence Int64,
    producer_kind LowCardinality(String),
    producer_id String,
    producer_software_version Nullable(String),
    schema_version UInt16,
    schema_id UInt32,
    topic LowCardinality(String),
    `partition` Int32,
    `offset` Int64,
    ingested_at DateTime64(6, 'UTC'),
    traceparent Nullable(String),
    raw String CODEC(ZSTD(1)),

    baseline_id String,
    module_type LowCardinality(String),
    components_kind Array(LowCardinality(String)),
    components_name Array(String),
    components_version Array(String),
    components_content_hash Array(String),
    approved_by String,
    approved_at DateTime64(6, 'UTC'),
    effective_from DateTime64(6, 'UTC'),
    change_reference Nullable(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (site_id, event_id);
