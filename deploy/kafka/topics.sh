#!/usr/bin/env bash
# Create atmpnet's topics on the central cluster (no-op for topics that exist). Partition counts
# are fixed here: they bound how many processor workers share the load (docs/operations.md).
# Mirrored topics (<site>.atmp.*) are created by MirrorMaker with their source's partitions.
set -euo pipefail
: "${KAFKA_ADMIN_BOOTSTRAP:?internal BROKER listener, e.g. kafka-1:19092}"
KAFKA_BIN=${KAFKA_BIN:-/opt/kafka/bin}
PARTITIONS=${TOPIC_PARTITIONS:-12}

for t in atmp.batch-steps.v1 atmp.sensor-summaries.v1 atmp.deviations.v1 atmp.module-configs.v1 \
         atmp.baselines.v1 atmp.deviation-triage.v1 atmp.config-drift.v1 atmp.dead-letter.v1; do
  "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$KAFKA_ADMIN_BOOTSTRAP" --create --if-not-exists \
    --topic "$t" --partitions "$PARTITIONS" --replication-factor 3 \
    --config min.insync.replicas=2 --config retention.ms=1209600000 >/dev/null
  echo "topics: $t"
done
