#!/usr/bin/env bash
# Create (or update) the SCRAM-SHA-512 credentials of every principal on the central cluster.
# Passwords come from the environment only; re-running sets the same credentials again.
#   principals: admin, atmpnet-gateway, atmpnet-processor, schema-registry,
#               and one per site in ATMP_SITES (password KAFKA_SITE_<SITE_ID>_PASSWORD,
#               site id upper-cased with '-' as '_', e.g. KAFKA_SITE_SITE_A_PASSWORD).
set -euo pipefail
: "${KAFKA_ADMIN_BOOTSTRAP:?internal BROKER listener, e.g. kafka-1:19092}"
KAFKA_BIN=${KAFKA_BIN:-/opt/kafka/bin}

set_scram() {  # principal, name of the variable holding its password
  local principal=$1 var=$2
  local password=${!var:-}
  if [[ -z "$password" ]]; then
    echo "scram-users: $var is empty: no credentials for $principal" >&2
    return 1
  fi
  "$KAFKA_BIN/kafka-configs.sh" --bootstrap-server "$KAFKA_ADMIN_BOOTSTRAP" --alter \
    --entity-type users --entity-name "$principal" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=${password}]" >/dev/null
  echo "scram-users: $principal"
}

set_scram admin KAFKA_ADMIN_PASSWORD
set_scram atmpnet-gateway KAFKA_GATEWAY_PASSWORD
set_scram atmpnet-processor KAFKA_PROCESSOR_PASSWORD
set_scram schema-registry KAFKA_SCHEMA_REGISTRY_PASSWORD
for site in ${ATMP_SITES:-}; do
  var="KAFKA_SITE_$(echo "$site" | tr 'a-z-' 'A-Z_')_PASSWORD"
  set_scram "$site" "$var"
done
