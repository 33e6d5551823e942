#!/usr/bin/env bash
# Kafka ACLs. Nothing is allowed unless granted here (allow.everyone.if.no.acl.found=false).
#
#   acls.sh central            the central cluster: services, and each site of ATMP_SITES may
#                              write only topics named "<site>." (its MirrorMaker copy)
#   acls.sh site <site-id>     a site's own cluster: the site's systems write the atmp.* input
#                              topics; the "mirror" principal only reads them for MirrorMaker
#
# Idempotent: adding an ACL that exists is a no-op.
# Site ids are checked first (slug, not reserved: see valid_site_id); a bad one grants nothing.
set -euo pipefail
set -f  # no pathname expansion: ATMP_SITES is split on blanks, never globbed
: "${KAFKA_ADMIN_BOOTSTRAP:?internal BROKER listener, e.g. kafka-1:19092}"
KAFKA_BIN=${KAFKA_BIN:-/opt/kafka/bin}

# The five input topics (atmpnet.contract.events TOPIC) and what the processors make of them.
INPUT_TOPICS="atmp.batch-steps.v1 atmp.sensor-summaries.v1 atmp.deviations.v1 atmp.module-configs.v1 atmp.baselines.v1"
DERIVED_TOPICS="atmp.deviation-triage.v1 atmp.config-drift.v1 atmp.dead-letter.v1"

# A site id becomes a principal (User:<site>) and, on central, the prefix "<site>." of the topics
# and groups it owns. It must be a slug as in the event contract (ASCII spelled out: no locale
# ranges) and must not be reserved: "atmp" would own "atmp.*" (every central topic), atmpnet* and
# mm2* are the services' and MirrorMaker's prefixes, _* Kafka's internal topics, and admin,
# schema-registry and mirror are principals of their own.
SITE_ID_PATTERN='^[0123456789abcdefghijklmnopqrstuvwxyz][0123456789abcdefghijklmnopqrstuvwxyz-]{0,62}$'

valid_site_id() {  # site id: returns non-zero, with the reason on stderr, if it may not be used
  local id=$1
  if [[ ! "$id" =~ $SITE_ID_PATTERN ]]; then
    echo "acls: site id '$id' is not a slug (a-z, 0-9 and '-', starting with a-z or 0-9, at most 63)" >&2
    return 1
  fi
  case "$id" in
    atmp | atmpnet* | mm2* | _* | admin | schema-registry | mirror)
      echo "acls: site id '$id' is reserved (atmp, atmpnet*, mm2*, _*, admin, schema-registry, mirror)" >&2
      return 1 ;;
  esac
}

valid_site_ids() {  # site ids...: all of them checked before any ACL is added
  local id ok=0
  for id in "$@"; do
    valid_site_id "$id" || ok=1
  done
  return "$ok"
}

acl() {  # kafka-acls.sh --add with the given arguments
  "$KAFKA_BIN/kafka-acls.sh" --bootstrap-server "$KAFKA_ADMIN_BOOTSTRAP" --add --force "$@" >/dev/null
}

central() {
  # shellcheck disable=SC2086  # ATMP_SITES is a blank-separated list
  valid_site_ids ${ATMP_SITES:-} || { echo "acls: nothing granted; fix ATMP_SITES" >&2; exit 1; }
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
  local site_id=${1-}
  valid_site_id "$site_id" || { echo "acls: nothing granted (acls.sh site <site-id>)" >&2; exit 1; }
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
