-- Input partitions: how many partitions each input topic has, as the processors read it from
-- the broker when they start. The integrity views settle a finding only once every partition of
-- the dense topics has delivered (views.stream_watermarks); a partition that has delivered
-- nothing yet leaves no trace in the event store, so its existence must be recorded apart.
CREATE TABLE IF NOT EXISTS input_partitions
(
    topic String,
    family LowCardinality(String),
    partitions UInt32,
    recorded_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(recorded_at)
ORDER BY topic;
