#!/usr/bin/env bash
# Per-worker CPU share under a burst of keep-alive connections (issue 20 item 1); prints text,
# never asserts.
#
#   tests/bench/balance.sh BIN [BIN...]      e.g. a build of main and this build, alternating
#
# For each of BENCH_ROUNDS (3) rounds and each BIN in turn: APP (default the Python app) on -w 2,
# wrk -t2 -c50 for BENCH_SECONDS (10) on BENCH_PATH (/); prints req/s and each worker's CPU ticks
# (utime + stime from /proc/PID/stat, before/after) and the larger worker's share. One worker
# taking the whole burst shows as a share near 100 % and about half the req/s.
#
# Env: BENCH_APP (default target/tmp/guests/python-app.wasm, built by the integration tests),
# BENCH_PATH, BENCH_ROUNDS, BENCH_SECONDS, BENCH_ARGS (extra rustcorn args, e.g. --reuse-port).
set -Eeuo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
app="${BENCH_APP:-$repo/target/tmp/guests/python-app.wasm}"
path="${BENCH_PATH:-/}"
rounds="${BENCH_ROUNDS:-3}"
seconds="${BENCH_SECONDS:-10}"
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
[[ $# -gt 0 && -f "$app" ]] || { echo "usage: $0 BIN [BIN...]; needs $app" >&2; exit 2; }
work="$(mktemp -d)"
pid=""
trap '[[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

ticks() { for w in "$@"; do awk '{print $14 + $15}' "/proc/$w/stat"; done | paste -sd' '; }

one() {
    local bin="$1"
    # shellcheck disable=SC2086
    setsid "$bin" serve "$app" -w 2 -b 127.0.0.1:0 --cache-dir "$work/cache" ${BENCH_ARGS:-} \
        >"$work/out" 2>"$work/err" &
    pid=$!
    for _ in $(seq 1200); do grep -q "listening on" "$work/out" 2>/dev/null && break; sleep 0.1; done
    local addr workers=()
    addr="$(grep -o 'listening on http://[0-9.:]*' "$work/out" | sed 's|.*http://||')"
    for _ in $(seq 300); do
        read -ra workers <<<"$(cat /proc/"$pid"/task/*/children 2>/dev/null)"
        [[ ${#workers[@]} -ge 2 ]] && break
        sleep 0.1
    done
    local before after
    before="$(ticks "${workers[@]}")"
    wrk -t2 -c50 "-d${seconds}s" "http://$addr$path" >"$work/wrk"
    after="$(ticks "${workers[@]}")"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
    local rps
    rps="$(awk '/Requests\/sec/ {print $2}' "$work/wrk")"
    paste -d' ' <(tr ' ' '\n' <<<"$before") <(tr ' ' '\n' <<<"$after") | awk -v rps="$rps" -v bin="$bin" '
        { d[NR] = $2 - $1; total += d[NR]; if (d[NR] > top) top = d[NR] }
        END { printf "%-40s %9s req/s  ticks", bin, rps; for (i = 1; i <= NR; i++) printf " %d", d[i];
              printf "  larger share %d%%\n", total ? 100 * top / total : 0 }'
}

echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$rounds"); do
    echo "round $round"
    for bin in "$@"; do one "$bin"; done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
