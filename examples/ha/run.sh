#!/usr/bin/env bash
# Three etcd members and three `tend run` replicas of this folder's spec, all on 127.0.0.1
# (free ports, a temporary folder). Needs etcd and etcdctl (Debian etcd-server and
# etcd-client) and python3 (to find free ports).
#
#   ./run.sh         start them, apply the spec, and keep running; Ctrl-C stops everything
#   ./run.sh demo    start them, apply, kill -9 the leader, show who took over, stop
#
# TEND names the tend binary (default: tend on PATH). Everything started here is stopped
# by its pid when the script ends, however it ends.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tend=${TEND:-tend}
mode=${1:-run}
work=$(mktemp -d)
pids=()

stop_all() {
  for pid in "${pids[@]}"; do
    kill -9 "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop_all EXIT

# Nine free ports: three etcd clients, three etcd peers, three replicas' /status.
read -r -a ports <<<"$(python3 -c '
import socket
held = [socket.socket() for _ in range(9)]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))
')"

cluster="e1=http://127.0.0.1:${ports[3]},e2=http://127.0.0.1:${ports[4]},e3=http://127.0.0.1:${ports[5]}"
for i in 0 1 2; do
  etcd --name "e$((i + 1))" --data-dir "$work/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:${ports[$i]}" \
    --advertise-client-urls "http://127.0.0.1:${ports[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${ports[$((i + 3))]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${ports[$((i + 3))]}" \
    --initial-cluster "$cluster" --initial-cluster-state new \
    --initial-cluster-token "tend-ha-$$" >"$work/etcd-$i.log" 2>&1 &
  pids+=($!)
done
endpoints="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
store="etcd://$endpoints"
echo "etcd: three members at $endpoints (pids ${pids[*]})"
for _ in $(seq 1 150); do
  ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done

# The state folder (the sim provider's world) is shared by the replicas here; on several
# machines it would be a shared folder, or a provider every machine reaches.
cp "$here/main.star" "$work/"
cd "$work"
"$tend" apply --yes --store "$store" | tail -n 1

replica_pids=()
for i in 6 7 8; do
  "$tend" run --store "$store" --listen "127.0.0.1:${ports[$i]}" >"$work/replica-$i.log" 2>&1 &
  pids+=($!)
  replica_pids+=($!)
done
echo "replicas: pids ${replica_pids[*]}, /status on ports ${ports[6]} ${ports[7]} ${ports[8]}"

# The pid of the replica that leads, from `tend status`.
leader() {
  "$tend" status --store "$store" 2>/dev/null | sed -n 's/^leader: `tend run` (pid \([0-9]*\) .*/\1/p'
}

wait_for_leader() {
  local not=${1:-none}
  for _ in $(seq 1 300); do
    local pid
    pid=$(leader)
    if [ -n "$pid" ] && [ "$pid" != "$not" ]; then
      echo "$pid"
      return 0
    fi
    sleep 0.1
  done
  echo "no replica leads" >&2
  return 1
}

first=$(wait_for_leader)
echo
"$tend" status --store "$store"

if [ "$mode" != demo ]; then
  echo
  echo "TEND_STORE=$store tend status   # from $work"
  echo "Ctrl-C stops the replicas and etcd."
  wait
  exit 0
fi

echo
echo "kill -9 $first (the leader)"
killed_at=$(date +%s.%N)
kill -9 "$first"
wait "$first" 2>/dev/null || true
next=$(wait_for_leader "$first")
took=$(python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$killed_at")
echo "new leader: pid $next, ${took}s after the kill (the lease's TTL is 10s)"
echo
"$tend" status --store "$store"
