#!/usr/bin/env bash
# tend against Docker Swarm on the same engine and image, in one run:
#   (a) heal latency, median of 10 kills, each of the container of 12 that has run longest:
#       `tend run` vs a Swarm service with --restart-delay 0s and one with the defaults,
#       from the engine's `die` event of the killed container to the `start` event of the
#       container that takes its place (the same one started again, or a new one); beside
#       them the engine's own floor, measured the same way: a container killed through the
#       API and at once started again (start only), or replaced (create + start);
#   (b) 0 -> 50 containers: `tend apply` vs `docker service scale` vs 50 parallel `docker run -d`.
# Prints a table and the ratios. Needs a running dockerd, curl, and the tend-busybox:test
# image (see .ci/run). Everything it starts is removed by its own labels or names when it
# ends, and the engine leaves swarm mode again if the script made it enter.
#
# Run: bash benches/docker-vs-swarm.sh   (builds tend in release first)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release
tend="${CARGO_TARGET_DIR:-$PWD/target}/release/tend"
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
  docker ps -aq --filter "label=bench=$tag-floor" | xargs -r docker rm -f >/dev/null
  [ "${joined:-}" = yes ] && docker swarm leave --force >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
  joined=yes
fi

# (a) heal latency: from the engine's die event of the killed container to the first start
# event of a container of the same filter after it (the engine's own clock for both).
running() { docker ps -q --filter "$1" | sort; }
samples=10
die_to_start() { # $1: filter, $2: since (seconds); prints ms from the first die to the next start
  # The times are the engine's, so asking late loses nothing; asking often would load the
  # engine while it starts the container being measured.
  local took
  while :; do
    sleep 0.5
    took=$(docker events --since "$2" --until "$(date +%s.%N)" --filter "$1" \
        --filter event=die --filter event=start --format '{{.Action}} {{.TimeNano}}' \
      | awk '$1 == "die" && !d { d = $2 } $1 == "start" && d { print int(($2 - d) / 1000000); exit }')
    [ -n "$took" ] && break
  done
  echo "$took"
}
heal_times() { # $1: filter; prints $samples latencies in ms
  for _ in $(seq 1 "$samples"); do
    # The container that has run longest since its start: never one healed a moment ago.
    victim=$(running "$1" | xargs docker inspect --format '{{.State.StartedAt}} {{.Id}}' \
      | sort | head -1 | cut -d' ' -f2)
    since=$(date +%s.%N)
    docker kill "$victim" >/dev/null
    die_to_start "$1" "$since"
    sleep 0.5
  done
}

# The engine's own floor, measured the same way: a container killed through the engine's
# API and at once, with nothing else in between, started again, or replaced by a new one
# (create + start) configured as tend makes them (an init process, labels).
api() { curl -sf --unix-socket /var/run/docker.sock -X POST "$@"; }
floor="label=bench=$tag-floor"
make_one() {
  api -H 'Content-Type: application/json' \
    -d "{\"Image\": \"$image\", \"Cmd\": [\"sleep\", \"100000\"], \"Labels\": {\"bench\": \"$tag-floor\"}, \"HostConfig\": {\"Init\": true}}" \
    http://localhost/containers/create | sed -n 's/.*"Id":"\([0-9a-f]*\)".*/\1/p'
}
floor_times() { # prints "start-again create+start" in ms, $samples lines
  local id new again anew
  id=$(make_one)
  api "http://localhost/containers/$id/start"
  for _ in $(seq 1 "$samples"); do
    sleep 1
    since=$(date +%s.%N)
    api "http://localhost/containers/$id/kill"
    api "http://localhost/containers/$id/start"
    again=$(die_to_start "$floor" "$since")
    sleep 1
    since=$(date +%s.%N)
    api "http://localhost/containers/$id/kill"
    new=$(make_one)
    api "http://localhost/containers/$new/start"
    anew=$(die_to_start "$floor" "$since")
    docker rm -f "$id" >/dev/null
    id=$new
    echo "$again $anew"
  done
  docker rm -f "$id" >/dev/null
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
tend_heals=$(heal_times "label=tend.project=$tag")
tend_heal=$(echo "$tend_heals" | median)
kill "$run_pid"; wait "$run_pid" 2>/dev/null || true; run_pid=
docker ps -aq --filter "label=tend.project=$tag" | xargs -r docker rm -f >/dev/null

docker service create -d --name "$tag-tuned" --replicas 12 --restart-delay 0s "$image" sleep 100000 >/dev/null
until [ "$(running "label=com.docker.swarm.service.name=$tag-tuned" | wc -l)" -eq 12 ]; do sleep 0.1; done
tuned_heals=$(heal_times "label=com.docker.swarm.service.name=$tag-tuned")
tuned_heal=$(echo "$tuned_heals" | median)
docker service rm "$tag-tuned" >/dev/null

docker service create -d --name "$tag-default" --replicas 12 "$image" sleep 100000 >/dev/null
until [ "$(running "label=com.docker.swarm.service.name=$tag-default" | wc -l)" -eq 12 ]; do sleep 0.1; done
default_heals=$(heal_times "label=com.docker.swarm.service.name=$tag-default")
default_heal=$(echo "$default_heals" | median)

engine=$(floor_times)
engine_start=$(echo "$engine" | cut -d' ' -f1 | median)
engine_create=$(echo "$engine" | cut -d' ' -f2 | median)

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
row() { printf '  %-40s %7s ms  %s\n' "$1" "$2" "${3:-}"; }
echo "heal latency, median of $samples kills (die event to start event):"
samples_of() { echo "$1" | sort -n | tr '\n' ' '; }
row "tend run" "$tend_heal" "samples: $(samples_of "$tend_heals")"
row "swarm --restart-delay 0s" "$tuned_heal" "tend / this = $(ratio "$tend_heal" "$tuned_heal") (target: at most 0.5); samples: $(samples_of "$tuned_heals")"
row "swarm default" "$default_heal" "tend / this = $(ratio "$tend_heal" "$default_heal")"
echo "the engine's floor: killed through its API and at once, median of $samples (die to start):"
row "create + start of a new container" "$engine_create" "tend / this = $(ratio "$tend_heal" "$engine_create")"
row "start of the same container only" "$engine_start" "tend / this = $(ratio "$tend_heal" "$engine_start")"
echo "0 -> 50 containers:"
row "tend apply --parallelism 50" "$tend_scale"
row "50 parallel docker run -d" "$run_scale" "tend / this = $(ratio "$tend_scale" "$run_scale") (target: at most 1.0)"
row "docker service scale" "$swarm_scale" "tend / this = $(ratio "$tend_scale" "$swarm_scale") (target: at most 0.5)"
