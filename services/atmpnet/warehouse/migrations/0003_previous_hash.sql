-- Event store: keep the envelope's previous_hash as a column (issue 7, envelope v2; null for v1
-- events and for the first event of a stream). The event's own chain hash needs no column: it
-- is computed from `raw` (lower(hex(SHA256(substring(raw, 6)))) in ClickHouse,
-- contract.chain.payload_hash in Python), which is the point: a stored hash could be altered
-- together with the row.
ALTER TABLE batch_steps ADD COLUMN IF NOT EXISTS previous_hash Nullable(String) AFTER sequence;
ALTER TABLE sensor_summaries ADD COLUMN IF NOT EXISTS previous_hash Nullable(String) AFTER sequence;
ALTER TABLE deviations ADD COLUMN IF NOT EXISTS previous_hash Nullable(String) AFTER sequence;
ALTER TABLE module_configs ADD COLUMN IF NOT EXISTS previous_hash Nullable(String) AFTER sequence;
ALTER TABLE baselines ADD COLUMN IF NOT EXISTS previous_hash Nullable(String) AFTER sequence;
