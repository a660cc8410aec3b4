#!/usr/bin/env bash
# Local Apache Kafka 4.4.0 (KRaft, one node acting as broker and controller) for nudgeflow.
#
#   deploy/kafka/kafka.sh fetch|start|stop|status
#
# Environment (all optional):
#   KAFKA_PORT             client listener on 127.0.0.1 (default 9092)
#   KAFKA_CONTROLLER_PORT  controller listener on 127.0.0.1 (default KAFKA_PORT + 1)
#   KAFKA_DATA_DIR         log dirs, config, pid and log file (default <repo>/.data/kafka)
#   KAFKA_HEAP             JVM heap (default 512m: the broker shares two cores with the tests)
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to answer (default 90)
#
# A secure listener beside the plaintext one (see secure_listener below), as managed clusters have it:
#   KAFKA_SASL_SSL_PORT    SASL_SSL listener on 127.0.0.1 (SCRAM-SHA-256 and SCRAM-SHA-512); unset: none
#   KAFKA_SSL_KEYSTORE     the broker's PKCS12 keystore (key and certificate for 127.0.0.1/localhost)
#   KAFKA_SSL_KEYSTORE_PASSWORD  its password
#   KAFKA_SCRAM_USERS      "user:password ..." created with both SCRAM mechanisms when the storage is formatted
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
lib="$here/lib"
port="${KAFKA_PORT:-9092}"
controller_port="${KAFKA_CONTROLLER_PORT:-$((port + 1))}"
data="${KAFKA_DATA_DIR:-$repo/.data/kafka}"
heap="${KAFKA_HEAP:-512m}"
timeout="${KAFKA_START_TIMEOUT:-90}"
pidfile="$data/kafka.pid"
logfile="$data/kafka.log"
config="$data/server.properties"

say() { echo "kafka: $*" >&2; }

fetch() {
  if [ -f "$lib/kafka_2.13-4.4.0.jar" ]; then
    return 0
  fi
  command -v mvn >/dev/null || { say "mvn (Apache Maven) is needed to fetch the Kafka jars"; exit 1; }
  command -v java >/dev/null || { say "java (17 or newer) is needed to run Kafka"; exit 1; }
  say "fetching org.apache.kafka:kafka_2.13:4.4.0 and its dependencies into $lib (once)"
  rm -rf "$lib.partial"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies -DoutputDirectory="$lib.partial"
  mv "$lib.partial" "$lib"
}

running_pid() {
  # Prints the broker's pid when the recorded process is alive and really is our broker.
  [ -f "$pidfile" ] || return 1
  local pid
  pid="$(cat "$pidfile")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "kafka.Kafka $config" || return 1
  echo "$pid"
}

answers() {
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

write_config() {
  mkdir -p "$data/logs"
  cat > "$config" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$data/logs
num.partitions=8
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
PROPS
}

# The SASL_SSL listener: appended after the plaintext config, whose listener lines it overrides (a
# properties file keeps the last value of a key). Clients then need TLS (trusting the keystore's CA) and a
# SCRAM user; the plaintext listener stays for the inter-broker and controller traffic.
secure_listener() {
  [ -n "${KAFKA_SASL_SSL_PORT:-}" ] || return 0
  : "${KAFKA_SSL_KEYSTORE:?KAFKA_SASL_SSL_PORT needs KAFKA_SSL_KEYSTORE}"
  : "${KAFKA_SSL_KEYSTORE_PASSWORD:?KAFKA_SASL_SSL_PORT needs KAFKA_SSL_KEYSTORE_PASSWORD}"
  local scram="org.apache.kafka.common.security.scram.ScramLoginModule required;"
  cat >> "$config" <<PROPS
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=$scram
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=$scram
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$KAFKA_SSL_KEYSTORE
listener.name.sasl_ssl.ssl.keystore.password=$KAFKA_SSL_KEYSTORE_PASSWORD
listener.name.sasl_ssl.ssl.client.auth=none
PROPS
}

# format's --add-scram arguments: each user of KAFKA_SCRAM_USERS with both SCRAM mechanisms.
scram_users=()
scram_arguments() {
  local entry
  for entry in ${KAFKA_SCRAM_USERS:-}; do
    for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
      scram_users+=(--add-scram "$mechanism=[name=${entry%%:*},password=${entry#*:}]")
    done
  done
}

start() {
  fetch
  if pid="$(running_pid)"; then
    say "already running (pid $pid) on 127.0.0.1:$port"
    return 0
  fi
  write_config
  secure_listener
  if [ ! -f "$data/logs/meta.properties" ]; then
    scram_arguments
    local cluster_id
    cluster_id="$(java -cp "$lib/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    java -cp "$lib/*" kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$config" "${scram_users[@]}" \
      >> "$logfile" 2>&1 || { say "formatting storage failed, see $logfile"; exit 1; }
  fi
  # setsid: the broker outlives the shell that started it and gets no Ctrl-C meant for its parent.
  setsid java "-Xmx$heap" "-Xms$heap" -XX:+UseG1GC -Djava.awt.headless=true \
    -cp "$lib/*" kafka.Kafka "$config" >> "$logfile" 2>&1 < /dev/null &
  local started=$!
  echo "$started" > "$pidfile"
  local waited=0
  until answers; do
    # Alive, not "is our broker": until the forked shell has exec'd java its command line is still bash's.
    if ! kill -0 "$started" 2>/dev/null; then
      say "broker exited during start-up; last lines of $logfile:"
      tail -n 20 "$logfile" >&2
      exit 1
    fi
    if [ "$waited" -ge $((timeout * 5)) ]; then
      say "broker did not answer on 127.0.0.1:$port within ${timeout}s"
      exit 1
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
  say "running (pid $(cat "$pidfile")) on 127.0.0.1:$port, data in $data"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    say "not running"
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; say "stopped"; return 0; }
    sleep 0.2
  done
  say "broker did not stop within 30s; killing pid $pid"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

status() {
  local pid
  if pid="$(running_pid)"; then
    if answers; then
      echo "running (pid $pid) on 127.0.0.1:$port"
    else
      echo "starting or unresponsive (pid $pid), not answering on 127.0.0.1:$port"
    fi
    return 0
  fi
  echo "not running"
  return 3
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 fetch|start|stop|status" >&2; exit 2 ;;
esac
