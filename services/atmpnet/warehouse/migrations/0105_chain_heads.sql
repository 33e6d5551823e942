-- Chain heads: per sequence stream (a module, else a producer), the sequence and chain hash of
-- the newest event the ingest has written, recorded apart from the event tables in the same
-- write. A hash chain protects each event by the next one's previous_hash; the last event of a
-- stream has no successor yet, so only this record shows that it was altered or removed
-- (docs/integrity.md). The hash is computed from the record bytes as they arrived.
CREATE TABLE IF NOT EXISTS chain_heads
(
    stream String,
    site_id LowCardinality(String),
    sequence Int64,
    hash String,
    event_id UUID,
    recorded_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(sequence)
ORDER BY stream;
