-- Data integrity (issue 7, docs/integrity.md): integrity findings and completeness per site, as
-- view tables of the projector (same generation/commit design as 0100_views.sql), and the
-- first-arrival record that lateness is measured on.

CREATE TABLE IF NOT EXISTS vt_integrity_findings
(
    generation UInt64,
    finding_id String,
    kind LowCardinality(String),
    severity LowCardinality(String),
    alarm_code LowCardinality(String),
    site_id LowCardinality(String),
    module_id Nullable(String),
    stream String,
    lane Nullable(UInt16),
    batch_id Nullable(String),
    first_at Nullable(DateTime64(6, 'UTC')),
    last_at Nullable(DateTime64(6, 'UTC')),
    sequences Array(Int64),
    evidence Array(String),
    message String
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY (site_id, kind, finding_id);

CREATE TABLE IF NOT EXISTS vt_completeness
(
    generation UInt64,
    site_id LowCardinality(String),
    streams UInt32,
    expected UInt64,
    received UInt64,
    missing UInt64,
    on_time UInt64,
    skewed UInt64,
    received_share Float64,
    on_time_share Float64
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY site_id;

CREATE VIEW IF NOT EXISTS integrity_findings AS
SELECT * EXCEPT (generation) FROM vt_integrity_findings
WHERE generation = (SELECT max(generation) FROM view_generations);

CREATE VIEW IF NOT EXISTS completeness AS
SELECT * EXCEPT (generation) FROM vt_completeness
WHERE generation = (SELECT max(generation) FROM view_generations);

-- Where each event id was first read (topic, partition, offset), recorded by the projector the
-- first time it sees the id. The event store keeps the row inserted last, so a re-delivery
-- would otherwise move an event's arrival; lateness is measured on the first one. A record,
-- not a view: never dropped by a refresh. Read with argMin(..., ingested_at) GROUP BY event_id.
CREATE TABLE IF NOT EXISTS event_arrivals
(
    event_id UUID,
    topic LowCardinality(String),
    `partition` Int32,
    `offset` Int64,
    occurred_at DateTime64(6, 'UTC'),
    ingested_at DateTime64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY event_id;
