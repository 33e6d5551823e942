#!/usr/bin/env bash
# Kafka ACLs. Nothing is allowed unless granted here (allow.everyone.if.no.acl.found=false).
#
#   acls.sh central            the central cluster: services, and each site of ATMP_SITES may
#                              write only topics named "<site>." (its MirrorMaker copy)
#   acls.sh site <site-id>     a site's own cluster: the site's systems write the atmp.* input
#                              topics; the "mirror" principal only reads them for MirrorMaker
#
# Idempotent: adding an ACL that exists is a no-op.
set -euo pipefail
: "${KAFKA_ADMIN_BOOTSTRAP:?internal BROKER listener, e.g. kafka-1:19092}"
KAFKA_BIN=${KAFKA_BIN:-/opt/kafka/bin}

# The five input topics (atmpnet.contract.events TOPIC) and what the processors make of them.
INPUT_TOPICS="atmp.batch-steps.v1 atmp.sensor-summaries.v1 atmp.deviations.v1 atmp.module-configs.v1 atmp.baselines.v1"
DERIVED_TOPICS="atmp.deviation-triage.v1 atmp.config-drift.v1 atmp.dead-letter.v1"

acl() {  # kafka-acls.sh --add with the given arguments
  "$KAFKA_BIN/kafka-acls.sh" --bootstrap-server "$KAFKA_ADMIN_BOOTSTRAP" --add --force "$@" >/dev/null
}

central() {
  # Ingest gateway: writes the input topics for the sites whose keys it checked.
  for t in $INPUT_TOPICS; do
    acl --allow-principal User:atmpnet-gateway --operation Write --operation Describe --topic "$t"
  done
  acl --allow-principal User:atmpnet-gateway --operation IdempotentWrite --cluster

  # Processors: read every input topic, unprefixed and mirrored (one prefix per site); write
  # the derived topics; own their consumer group and faust's internal topics.
  for t in $INPUT_TOPICS; do
    acl --allow-principal User:atmpnet-processor --operation Read --operation Describe --topic "$t"
  done
  for site in ${ATMP_SITES:-}; do
    acl --allow-principal User:atmpnet-processor --operation Read --operation Describe \
      --resource-pattern-type prefixed --topic "${site}.atmp."
  done
  for t in $DERIVED_TOPICS; do
    acl --allow-principal User:atmpnet-processor --operation Write --operation Describe --operation Create \
      --topic "$t"
  done
  acl --allow-principal User:atmpnet-processor --operation All \
    --resource-pattern-type prefixed --topic atmpnet-processor
  acl --allow-principal User:atmpnet-processor --operation All \
    --resource-pattern-type prefixed --group atmpnet-processor
  acl --allow-principal User:atmpnet-processor --operation IdempotentWrite --operation Describe --cluster

  # Downstream subscribers of the derived topics (QMS and the like) get their own principal
  # and read grants on atmp.deviation-triage.v1 / atmp.config-drift.v1, added here per consumer.

  # Schema Registry: its store topic and group.
  acl --allow-principal User:schema-registry --operation All --topic _schemas
  acl --allow-principal User:schema-registry --operation All \
    --resource-pattern-type prefixed --group schema-registry
  acl --allow-principal User:schema-registry --operation DescribeConfigs --topic _schemas

  # Each site (through its MirrorMaker): everything, but only under its own prefix "<site>.".
  for site in ${ATMP_SITES:-}; do
    acl --allow-principal "User:${site}" --operation Write --operation Read --operation Create \
      --operation Describe --operation DescribeConfigs --operation AlterConfigs \
      --resource-pattern-type prefixed --topic "${site}."
    acl --allow-principal "User:${site}" --operation Read --operation Describe \
      --resource-pattern-type prefixed --group "${site}."
    acl --allow-principal "User:${site}" --operation IdempotentWrite --operation Describe --cluster
    echo "acls: ${site} may write ${site}.* only"
  done
}

site() {
  local site_id=${1:?acls.sh site <site-id>}
  # The site's own systems (SitePublisher) write the input topics of their own cluster.
  for t in $INPUT_TOPICS; do
    acl --allow-principal "User:${site_id}" --operation Write --operation Describe --operation Create \
      --topic "$t"
    acl --allow-principal User:mirror --operation Read --operation Describe --operation DescribeConfigs \
      --topic "$t"
  done
  acl --allow-principal "User:${site_id}" --operation IdempotentWrite --cluster
  # MirrorMaker keeps its offset syncs on the source cluster (offset-syncs.topic.location=source).
  acl --allow-principal User:mirror --operation All --resource-pattern-type prefixed --topic mm2-offset-syncs
  acl --allow-principal User:mirror --operation Describe --cluster
  echo "acls: site cluster of ${site_id} ready"
}

case "${1:-}" in
  central) central ;;
  site) shift; site "$@" ;;
  *) echo "usage: acls.sh central | acls.sh site <site-id>" >&2; exit 2 ;;
esac
