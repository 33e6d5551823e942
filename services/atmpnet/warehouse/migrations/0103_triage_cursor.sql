-- The live stream's cursor on the triage view (docs/api.md, "Live stream"): per deviation, the
-- ingest time of the newest stored event that can change its class, severity, status or
-- duplicate_of (its own events, and those of the deviations raised before it on the same
-- module, lane, parameter and alarm code). It only grows, so a client that resumes from the
-- last (changed_at, deviation_id) it saw gets every deviation raised or changed since.
-- Store metadata, not a function of the event set: read_views leaves it out of comparisons.
ALTER TABLE vt_deviation_triage ADD COLUMN IF NOT EXISTS changed_at DateTime64(6, 'UTC') DEFAULT toDateTime64(0, 6, 'UTC');

DROP VIEW IF EXISTS deviation_triage;

CREATE VIEW IF NOT EXISTS deviation_triage AS
SELECT * EXCEPT (generation) FROM vt_deviation_triage
WHERE generation = (SELECT max(generation) FROM view_generations);
