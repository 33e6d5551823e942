-- Event store: a bloom-filter skip index on event_id in every event-store table.
--
-- The ingest looks up each batch's event ids before inserting (IngestCore.against_store): an
-- event id is stored once, and a later copy with other content is a dead letter instead of
-- silently replacing the stored row (the ReplacingMergeTree keeps the row inserted last).
-- The sorting key (site_id, event_id) already narrows that lookup to the batch's sites; random
-- UUIDs spread over every granule of a site, so the index lets the lookup skip the granules
-- that cannot hold one of the ids. 0.001 false positives: ~15 bits per distinct id, small next
-- to `raw`. MATERIALIZE builds it for the parts written before this migration (a mutation; on
-- an empty store it is free).
ALTER TABLE batch_steps ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.001) GRANULARITY 1;
ALTER TABLE batch_steps MATERIALIZE INDEX event_id_bloom;
ALTER TABLE sensor_summaries ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.001) GRANULARITY 1;
ALTER TABLE sensor_summaries MATERIALIZE INDEX event_id_bloom;
ALTER TABLE deviations ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.001) GRANULARITY 1;
ALTER TABLE deviations MATERIALIZE INDEX event_id_bloom;
ALTER TABLE module_configs ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.001) GRANULARITY 1;
ALTER TABLE module_configs MATERIALIZE INDEX event_id_bloom;
ALTER TABLE baselines ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.001) GRANULARITY 1;
ALTER TABLE baselines MATERIALIZE INDEX event_id_bloom;
