-- The four views (docs/views.md), as tables the projector (atmpnet.warehouse.views) rewrites.
--
-- Each refresh recomputes every view from the event store (FINAL) and writes it as a new
-- generation: the rows go into the vt_* tables under a new generation number (each table is
-- partitioned by generation), then one row in view_generations commits it. Readers use the
-- plain-named SQL views below, which show only the latest committed generation, so a refresh
-- that dies half-way is never seen; the next refresh drops uncommitted and superseded
-- generations. ClickHouse has no transactions; this is what makes a refresh atomic for readers
-- and safe to repeat.

CREATE TABLE IF NOT EXISTS view_generations
(
    generation UInt64,
    committed_at DateTime64(6, 'UTC'),
    as_of Nullable(DateTime64(6, 'UTC')),
    observed_from Nullable(DateTime64(6, 'UTC')),
    events UInt64,
    reason LowCardinality(String)
)
ENGINE = MergeTree
ORDER BY generation;

CREATE TABLE IF NOT EXISTS vt_batch_status
(
    generation UInt64,
    site_id LowCardinality(String),
    module_id String,
    lane UInt16,
    batch_id String,
    product_code LowCardinality(String),
    outcome LowCardinality(String),
    started_at Nullable(DateTime64(6, 'UTC')),
    completed_at Nullable(DateTime64(6, 'UTC')),
    failed_at Nullable(DateTime64(6, 'UTC')),
    failed_step LowCardinality(Nullable(String)),
    current_step LowCardinality(Nullable(String)),
    occupied_from Nullable(DateTime64(6, 'UTC')),
    occupied_until Nullable(DateTime64(6, 'UTC'))
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY (site_id, batch_id);

CREATE TABLE IF NOT EXISTS vt_capacity_lanes
(
    generation UInt64,
    site_id LowCardinality(String),
    module_id String,
    lane UInt16,
    state LowCardinality(String),
    batch_id Nullable(String),
    step LowCardinality(Nullable(String)),
    since Nullable(DateTime64(6, 'UTC')),
    expected_free_at Nullable(DateTime64(6, 'UTC')),
    as_of DateTime64(6, 'UTC')
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY (site_id, module_id, lane);

CREATE TABLE IF NOT EXISTS vt_capacity_lane_days
(
    generation UInt64,
    site_id LowCardinality(String),
    module_id String,
    lane UInt16,
    day Date,
    busy_hours Float64,
    down_hours Float64,
    idle_hours Float64,
    utilization Nullable(Float64)
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY (site_id, module_id, lane, day);

CREATE TABLE IF NOT EXISTS vt_capacity_site_days
(
    generation UInt64,
    site_id LowCardinality(String),
    day Date,
    batches_started UInt32,
    batches_completed UInt32,
    batches_failed UInt32
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY (site_id, day);

CREATE TABLE IF NOT EXISTS vt_capacity_in_progress
(
    generation UInt64,
    site_id LowCardinality(String),
    step LowCardinality(String),
    batches UInt32
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY (site_id, step);

CREATE TABLE IF NOT EXISTS vt_capacity_forecast
(
    generation UInt64,
    site_id LowCardinality(String),
    days_ahead UInt8,
    horizon DateTime64(6, 'UTC'),
    lanes_total UInt32,
    lanes_free UInt32
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY (site_id, days_ahead);

CREATE TABLE IF NOT EXISTS vt_capacity_totals
(
    generation UInt64,
    scope LowCardinality(String),
    site_id LowCardinality(String),
    lanes_total UInt32,
    lanes_busy UInt32,
    lanes_idle UInt32,
    lanes_down UInt32,
    batches_in_progress UInt32,
    headroom Nullable(Float64),
    lanes_free_in_7_days UInt32,
    busy_hours Float64,
    available_hours Float64,
    utilization Nullable(Float64)
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY (scope, site_id);

CREATE TABLE IF NOT EXISTS vt_deviation_triage
(
    generation UInt64,
    deviation_id String,
    raised_event_id String,
    site_id LowCardinality(String),
    module_id String,
    lane Nullable(UInt16),
    batch_id Nullable(String),
    step LowCardinality(Nullable(String)),
    parameter LowCardinality(Nullable(String)),
    alarm_code LowCardinality(Nullable(String)),
    duration_seconds Nullable(Float64),
    raised_at DateTime64(6, 'UTC'),
    base_class LowCardinality(String),
    deviation_class LowCardinality(String),
    severity LowCardinality(String),
    priority UInt8,
    due_at DateTime64(6, 'UTC'),
    status LowCardinality(String),
    updated_at Nullable(DateTime64(6, 'UTC')),
    closed_at Nullable(DateTime64(6, 'UTC')),
    duplicate_of Nullable(String),
    software_versions Nullable(String),
    module_cluster Nullable(String),
    module_cluster_size UInt32,
    version_cluster Nullable(String),
    version_cluster_size UInt32,
    version_cluster_sites UInt32,
    age_hours Float64,
    overdue Bool
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY (site_id, raised_at, deviation_id);

CREATE TABLE IF NOT EXISTS vt_drift_modules
(
    generation UInt64,
    site_id LowCardinality(String),
    module_id String,
    module_type LowCardinality(String),
    state LowCardinality(String),
    baseline_id Nullable(String),
    configured_at DateTime64(6, 'UTC'),
    components_not_in_baseline UInt32,
    drifted_since Nullable(DateTime64(6, 'UTC'))
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY (site_id, module_id);

CREATE TABLE IF NOT EXISTS vt_drift_components
(
    generation UInt64,
    site_id LowCardinality(String),
    module_id String,
    module_type LowCardinality(String),
    component String,
    kind LowCardinality(String),
    running_version Nullable(String),
    baseline_version Nullable(String),
    status LowCardinality(String)
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY (site_id, module_id, component);

CREATE TABLE IF NOT EXISTS vt_drift_intervals
(
    generation UInt64,
    site_id LowCardinality(String),
    module_id String,
    module_type LowCardinality(String),
    opened_at DateTime64(6, 'UTC'),
    closed_at Nullable(DateTime64(6, 'UTC')),
    components Array(String)
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY (site_id, module_id, opened_at);

CREATE TABLE IF NOT EXISTS vt_drift_impact
(
    generation UInt64,
    site_id LowCardinality(String),
    module_id String,
    opened_at DateTime64(6, 'UTC'),
    batch_id String,
    step LowCardinality(String),
    attempt UInt16,
    step_started_at DateTime64(6, 'UTC'),
    step_ended_at Nullable(DateTime64(6, 'UTC'))
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY (site_id, module_id, opened_at, batch_id, step, attempt);

CREATE TABLE IF NOT EXISTS vt_drift_version_skew
(
    generation UInt64,
    module_type LowCardinality(String),
    component String,
    version String,
    sites UInt32,
    modules UInt32,
    versions_of_component UInt32
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY (module_type, component, version);

CREATE TABLE IF NOT EXISTS vt_performance
(
    generation UInt64,
    site_id LowCardinality(String),
    step LowCardinality(String),
    metric LowCardinality(String),
    value Float64,
    n UInt64,
    ci_low Nullable(Float64),
    ci_high Nullable(Float64),
    network_median Float64
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY (metric, step, site_id);

CREATE VIEW IF NOT EXISTS batch_status AS
SELECT * EXCEPT (generation) FROM vt_batch_status
WHERE generation = (SELECT max(generation) FROM view_generations);

CREATE VIEW IF NOT EXISTS capacity_lanes AS
SELECT * EXCEPT (generation) FROM vt_capacity_lanes
WHERE generation = (SELECT max(generation) FROM view_generations);

CREATE VIEW IF NOT EXISTS capacity_lane_days AS
SELECT * EXCEPT (generation) FROM vt_capacity_lane_days
WHERE generation = (SELECT max(generation) FROM view_generations);

CREATE VIEW IF NOT EXISTS capacity_site_days AS
SELECT * EXCEPT (generation) FROM vt_capacity_site_days
WHERE generation = (SELECT max(generation) FROM view_generations);

CREATE VIEW IF NOT EXISTS capacity_in_progress AS
SELECT * EXCEPT (generation) FROM vt_capacity_in_progress
WHERE generation = (SELECT max(generation) FROM view_generations);

CREATE VIEW IF NOT EXISTS capacity_forecast AS
SELECT * EXCEPT (generation) FROM vt_capacity_forecast
WHERE generation = (SELECT max(generation) FROM view_generations);

CREATE VIEW IF NOT EXISTS capacity_totals AS
SELECT * EXCEPT (generation) FROM vt_capacity_totals
WHERE generation = (SELECT max(generation) FROM view_generations);

CREATE VIEW IF NOT EXISTS deviation_triage AS
SELECT * EXCEPT (generation) FROM vt_deviation_triage
WHERE generation = (SELECT max(generation) FROM view_generations);

CREATE VIEW IF NOT EXISTS drift_modules AS
SELECT * EXCEPT (generation) FROM vt_drift_modules
WHERE generation = (SELECT max(generation) FROM view_generations);

CREATE VIEW IF NOT EXISTS drift_components AS
SELECT * EXCEPT (generation) FROM vt_drift_components
WHERE generation = (SELECT max(generation) FROM view_generations);

CREATE VIEW IF NOT EXISTS drift_intervals AS
SELECT * EXCEPT (generation) FROM vt_drift_intervals
WHERE generation = (SELECT max(generation) FROM view_generations);

CREATE VIEW IF NOT EXISTS drift_impact AS
SELECT * EXCEPT (generation) FROM vt_drift_impact
WHERE generation = (SELECT max(generation) FROM view_generations);

CREATE VIEW IF NOT EXISTS drift_version_skew AS
SELECT * EXCEPT (generation) FROM vt_drift_version_skew
WHERE generation = (SELECT max(generation) FROM view_generations);

CREATE VIEW IF NOT EXISTS performance AS
SELECT * EXCEPT (generation) FROM vt_performance
WHERE generation = (SELECT max(generation) FROM view_generations);

-- Derived events already published (atmp.deviation-triage.v1, atmp.config-drift.v1), by their
-- deterministic event id: a refresh publishes only ids not recorded here, and records them after
-- the broker acknowledged them. A crash in between publishes the same ids again; subscribers
-- dedupe by event id.
CREATE TABLE IF NOT EXISTS derived_published
(
    event_id UUID,
    topic LowCardinality(String),
    occurred_at DateTime64(6, 'UTC'),
    published_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY event_id;
