#!/usr/bin/env bash
# `.ci/run` (make lint + make test, CI=true) on fresh clones of this checkout's HEAD, N times back
# to back, with one core kept busy by `stress-ng --cpu 1` the whole time: the suite must stay
# green on a loaded machine. Prints one line per run (green/red, minutes) and keeps each log.
#
#   scripts/stress-ci.sh [N]      (default 5; needs the Debian package stress-ng)
set -euo pipefail
N=${1:-5}
repo=$(cd "$(dirname "$0")/.." && pwd)
command -v stress-ng >/dev/null || { echo "stress-ng is not installed (apt-get install stress-ng)" >&2; exit 2; }
out=$(mktemp -d /tmp/ciel-stress-XXXXXX)
stress-ng --cpu 1 --quiet &
stress=$!
trap 'kill $stress 2>/dev/null || true' EXIT
echo "stress-ci: $N runs of .ci/run at $(git -C "$repo" rev-parse --short HEAD), stress-ng --cpu 1; logs in $out"
green=0
for i in $(seq 1 "$N"); do
    rm -rf "$out/clone"
    git clone -q "$repo" "$out/clone"
    t0=$(date +%s)
    if (cd "$out/clone" && CI=true .ci/run > "$out/run-$i.log" 2>&1); then result=green; green=$((green + 1)); else result=red; fi
    t=$(( $(date +%s) - t0 ))
    summary=$(grep -E "passed|failed" "$out/run-$i.log" | tail -1 || true)
    printf 'run %d: %s in %d min %02d s, load %s: %s\n' "$i" "$result" $((t / 60)) $((t % 60)) \
        "$(cut -d' ' -f1-3 /proc/loadavg)" "$summary"
done
echo "stress-ci: $green of $N green"
[ "$green" -eq "$N" ]
