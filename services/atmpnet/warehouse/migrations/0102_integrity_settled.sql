-- Integrity findings: whether a finding is settled, i.e. every partition that carries its stream's
-- sensor summaries and batch steps has moved past its evidence by the lateness bound, so no
-- event still in flight can change it (docs/integrity.md, "As built"). Only settled findings are
-- raised as deviations: while one topic lags another (a replay, a consumer catching up), a gap
-- or an overlap can be an artefact of arrival order.
ALTER TABLE vt_integrity_findings ADD COLUMN IF NOT EXISTS settled Bool DEFAULT true;

DROP VIEW IF EXISTS integrity_findings;

CREATE VIEW IF NOT EXISTS integrity_findings AS
SELECT * EXCEPT (generation) FROM vt_integrity_findings
WHERE generation = (SELECT max(generation) FROM view_generations);
