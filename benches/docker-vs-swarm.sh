#!/usr/bin/env bash
# tend against Docker Swarm on the same engine and image, in one run:
#   (a) heal latency, median of 10 kills of the oldest of 12 containers: `tend run` vs a
#       Swarm service with --restart-delay 0s and one with the defaults;
#   (b) 0 -> 50 containers: `tend apply` vs `docker service scale` vs 50 parallel `docker run -d`.
# Prints the ratios. Needs a running dockerd and the tend-busybox:test image (see .ci/run).
# Everything it starts is removed by its own labels or names when it ends.
#
# Run: bash benches/docker-vs-swarm.sh   (builds tend in release first)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release
tend="$PWD/target/release/tend"
image=tend-busybox:test
tag="bench$$"
work=$(mktemp -d)
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

cleanup() {
  [ -n "${run_pid:-}" ] && kill "$run_pid" 2>/dev/null && wait "$run_pid" 2>/dev/null || true
  docker service rm "$tag-tuned" "$tag-default" >/dev/null 2>&1 || true
  # One filter per call: docker ps joins label filters with "and".
  docker ps -aq --filter "label=tend.project=$tag" | xargs -r docker rm -f >/dev/null
  docker ps -aq --filter "label=tend.project=$tag-scale" | xargs -r docker rm -f >/dev/null
  docker ps -aq --filter "label=bench=$tag" | xargs -r docker rm -f >/dev/null
  [ "${joined:-}" = yes ] && docker swarm leave --force >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
  joined=yes
fi

# (a) heal latency. A replacement counts once a new container of that slot or task is running.
running() { docker ps -q --filter "$1" | sort; }
heal_times() { # $1: filter; prints 10 latencies in ms
  for _ in $(seq 1 10); do
    before=$(running "$1")
    # The oldest: docker ps lists the newest first.
    victim=$(docker ps -q --filter "$1" | tail -1)
    t0=$(now)
    docker kill "$victim" >/dev/null
    while :; do
      after=$(running "$1")
      if [ "$(echo "$after" | grep -vc "^$victim$")" -ge "$(echo "$before" | wc -l)" ]; then break; fi
      sleep 0.02
    done
    ms "$t0" "$(now)"
    sleep 1
  done
}

mkdir -p "$work/heal"
cat > "$work/heal/main.star" <<STAR
project(name = "$tag")
group(name = "app", size = 12, provider = docker("$image"), flavor = flavor(command = ["sleep", "100000"]))
STAR
(cd "$work/heal" && exec "$tend" run --listen 127.0.0.1:19490 >/dev/null 2>&1) &
run_pid=$!
until [ "$(running "label=tend.project=$tag" | wc -l)" -eq 12 ]; do sleep 0.1; done
sleep 11 # past the window in which a death counts as a crash loop
tend_heal=$(heal_times "label=tend.project=$tag" | median)
kill "$run_pid"; wait "$run_pid" 2>/dev/null || true; run_pid=
docker ps -aq --filter "label=tend.project=$tag" | xargs -r docker rm -f >/dev/null

docker service create -d --name "$tag-tuned" --replicas 12 --restart-delay 0s "$image" sleep 100000 >/dev/null
until [ "$(running "label=com.docker.swarm.service.name=$tag-tuned" | wc -l)" -eq 12 ]; do sleep 0.1; done
tuned_heal=$(heal_times "label=com.docker.swarm.service.name=$tag-tuned" | median)
docker service rm "$tag-tuned" >/dev/null

docker service create -d --name "$tag-default" --replicas 12 "$image" sleep 100000 >/dev/null
until [ "$(running "label=com.docker.swarm.service.name=$tag-default" | wc -l)" -eq 12 ]; do sleep 0.1; done
default_heal=$(heal_times "label=com.docker.swarm.service.name=$tag-default" | median)

# (b) 0 -> 50 containers.
mkdir -p "$work/scale"
cat > "$work/scale/main.star" <<STAR
project(name = "$tag-scale")
group(name = "app", size = 50, provider = docker("$image"), flavor = flavor(command = ["sleep", "100000"]))
STAR
t0=$(now); (cd "$work/scale" && "$tend" apply --yes --parallelism 50 >/dev/null); tend_scale=$(ms "$t0" "$(now)")

docker service scale -d "$tag-default=0" >/dev/null
until [ "$(running "label=com.docker.swarm.service.name=$tag-default" | wc -l)" -eq 0 ]; do sleep 0.1; done
t0=$(now); docker service scale -d "$tag-default=50" >/dev/null
until [ "$(running "label=com.docker.swarm.service.name=$tag-default" | wc -l)" -ge 50 ]; do sleep 0.05; done
swarm_scale=$(ms "$t0" "$(now)")

t0=$(now)
for i in $(seq 1 50); do docker run -d --label "bench=$tag" "$image" sleep 100000 >/dev/null & done
wait
run_scale=$(ms "$t0" "$(now)")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "heal latency, median of 10 kills (ms): tend $tend_heal, swarm --restart-delay 0s $tuned_heal, swarm default $default_heal"
echo "  tend / tuned swarm = $(ratio "$tend_heal" "$tuned_heal") (target: at most 0.5); tend / default swarm = $(ratio "$tend_heal" "$default_heal")"
echo "0 -> 50 containers (ms): tend apply $tend_scale, docker service scale $swarm_scale, 50 parallel docker run -d $run_scale"
echo "  tend / docker run = $(ratio "$tend_scale" "$run_scale") (target: at most 1.25); tend / swarm = $(ratio "$tend_scale" "$swarm_scale") (target: at most 0.5)"
