#!/usr/bin/env bash
# Local Apache Kafka 4.4.0 cluster of three KRaft nodes on 127.0.0.1 (each a broker and one of the three
# voters of the controller quorum), for the failure tests and for trying replication by hand. kafka.sh stays
# the single node `make run` and most tests use; this script shares its jars (kafka.sh fetch).
#
#   deploy/kafka/cluster.sh start|stop|status            the whole cluster
#   deploy/kafka/cluster.sh start-node|stop-node|kill-node N   one node (1..3): graceful stop, or kill -9
#   deploy/kafka/cluster.sh bootstrap|config N      the bootstrap servers; node N's server.properties
#
# Environment (all optional):
#   KAFKA_PORTS             the three client ports, comma-separated (default 9192,9193,9194)
#   KAFKA_CONTROLLER_PORTS  the three controller ports (default client port + 100 each)
#   KAFKA_DATA_DIR          one directory per node under it (default <repo>/.data/kafka-cluster)
#   KAFKA_HEAP              JVM heap of each node (default 384m: three nodes share two cores)
#   KAFKA_START_TIMEOUT     seconds to wait for a node to answer (default 120)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
lib="$here/lib"
IFS=, read -r -a ports <<< "${KAFKA_PORTS:-9192,9193,9194}"
if [ -n "${KAFKA_CONTROLLER_PORTS:-}" ]; then
  IFS=, read -r -a controller_ports <<< "$KAFKA_CONTROLLER_PORTS"
else
  controller_ports=("$((ports[0] + 100))" "$((ports[1] + 100))" "$((ports[2] + 100))")
fi
[ "${#ports[@]}" -eq 3 ] && [ "${#controller_ports[@]}" -eq 3 ] || { echo "cluster: three ports each" >&2; exit 2; }
data="${KAFKA_DATA_DIR:-$repo/.data/kafka-cluster}"
heap="${KAFKA_HEAP:-384m}"
timeout="${KAFKA_START_TIMEOUT:-120}"

say() { echo "cluster: $*" >&2; }

node_dir() { echo "$data/node-$1"; }
node_port() { echo "${ports[$(($1 - 1))]}"; }

voters() {
  local out="" n
  for n in 1 2 3; do
    out="$out${out:+,}$n@127.0.0.1:${controller_ports[$((n - 1))]}"
  done
  echo "$out"
}

node_pid() {
  # The node's pid when the recorded process is alive and really is that node.
  local dir pid
  dir="$(node_dir "$1")"
  [ -f "$dir/kafka.pid" ] || return 1
  pid="$(cat "$dir/kafka.pid")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "kafka.Kafka $dir/server.properties" || return 1
  echo "$pid"
}

answers() {
  (exec 3<>"/dev/tcp/127.0.0.1/$(node_port "$1")") 2>/dev/null
}

write_node_config() {
  local n="$1" dir
  dir="$(node_dir "$n")"
  mkdir -p "$dir/logs"
  # Internal topics at three replicas with two in sync: committed offsets and transactions ride through
  # the loss of any one node, as the pipeline's own topics do (NUDGEFLOW_REPLICATION_FACTOR=3,
  # NUDGEFLOW_MIN_INSYNC_REPLICAS=2).
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$(voters)
listeners=PLAINTEXT://127.0.0.1:$(node_port "$n"),CONTROLLER://127.0.0.1:${controller_ports[$((n - 1))]}
advertised.listeners=PLAINTEXT://127.0.0.1:$(node_port "$n")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/logs
num.partitions=8
default.replication.factor=3
min.insync.replicas=2
auto.create.topics.enable=false
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
log.retention.hours=168
PROPS
}

format_storage() {
  local cluster_id n dir
  [ -f "$data/cluster.id" ] || java -cp "$lib/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 > "$data/cluster.id"
  cluster_id="$(cat "$data/cluster.id")"
  for n in 1 2 3; do
    dir="$(node_dir "$n")"
    [ -f "$dir/logs/meta.properties" ] && continue
    java -cp "$lib/*" kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" \
      >> "$dir/kafka.log" 2>&1 || { say "formatting node $n failed, see $dir/kafka.log"; exit 1; }
  done
}

launch_node() {
  local n="$1" dir pid
  dir="$(node_dir "$n")"
  if pid="$(node_pid "$n")"; then
    say "node $n already running (pid $pid)"
    return 0
  fi
  # setsid: the node outlives the shell that started it and gets no Ctrl-C meant for its parent.
  setsid java "-Xmx$heap" "-Xms$heap" -XX:+UseG1GC -XX:ActiveProcessorCount=1 -Djava.awt.headless=true \
    -cp "$lib/*" kafka.Kafka "$dir/server.properties" >> "$dir/kafka.log" 2>&1 < /dev/null &
  echo $! > "$dir/kafka.pid"
}

wait_node() {
  local n="$1" waited=0 dir
  dir="$(node_dir "$n")"
  until answers "$n"; do
    # Alive, not "is our node": until the forked shell has exec'd java its command line is still bash's.
    if ! kill -0 "$(cat "$dir/kafka.pid")" 2>/dev/null; then
      say "node $n exited during start-up; last lines of $dir/kafka.log:"
      tail -n 20 "$dir/kafka.log" >&2
      exit 1
    fi
    if [ "$waited" -ge $((timeout * 5)) ]; then
      say "node $n did not answer on 127.0.0.1:$(node_port "$n") within ${timeout}s"
      exit 1
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
}

start() {
  bash "$here/kafka.sh" fetch
  mkdir -p "$data"
  local n
  for n in 1 2 3; do write_node_config "$n"; done
  format_storage
  # All three first: a node's broker waits for a controller quorum, which needs two of the three voters.
  for n in 1 2 3; do launch_node "$n"; done
  for n in 1 2 3; do wait_node "$n"; done
  say "running on $(bootstrap), data in $data"
}

start_node() {
  write_node_config "$1"
  launch_node "$1"
  wait_node "$1"
  say "node $1 running on 127.0.0.1:$(node_port "$1")"
}

stop_node() {
  local n="$1" pid
  if ! pid="$(node_pid "$n")"; then
    rm -f "$(node_dir "$n")/kafka.pid"
    return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$(node_dir "$n")/kafka.pid"; say "node $n stopped"; return 0; }
    sleep 0.2
  done
  say "node $n did not stop within 60s; killing pid $pid"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$(node_dir "$n")/kafka.pid"
}

kill_node() {
  local n="$1" pid
  pid="$(node_pid "$n")" || { say "node $n is not running"; return 1; }
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$(node_dir "$n")/kafka.pid"
  say "node $n killed (pid $pid)"
}

stop() {
  # All three at once: one by one, the last node waits for a controller quorum that has already gone.
  local n pids=()
  for n in 1 2 3; do
    if pid="$(node_pid "$n")"; then kill -TERM "$pid"; pids+=("$pid"); fi
  done
  for _ in $(seq 1 300); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for n in 1 2 3; do rm -f "$(node_dir "$n")/kafka.pid"; done
  say "stopped"
}

bootstrap() {
  echo "127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
}

status() {
  local n pid up=0
  for n in 1 2 3; do
    if pid="$(node_pid "$n")" && answers "$n"; then
      echo "node $n running (pid $pid) on 127.0.0.1:$(node_port "$n")"
      up=$((up + 1))
    else
      echo "node $n not running"
    fi
  done
  [ "$up" -eq 3 ] || return 3
}

node_arg() {
  case "${1:-}" in 1|2|3) echo "$1" ;; *) echo "usage: $0 $2 1|2|3" >&2; exit 2 ;; esac
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  bootstrap) bootstrap ;;
  config) write_node_config "$(node_arg "${2:-}" config)"; cat "$(node_dir "$2")/server.properties" ;;
  start-node) start_node "$(node_arg "${2:-}" start-node)" ;;
  stop-node) stop_node "$(node_arg "${2:-}" stop-node)" ;;
  kill-node) kill_node "$(node_arg "${2:-}" kill-node)" ;;
  *) echo "usage: $0 start|stop|status|bootstrap|config N|start-node N|stop-node N|kill-node N" >&2; exit 2 ;;
esac
