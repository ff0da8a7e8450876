#!/usr/bin/env bash
# Overload and metrics-cost scenarios (issue 9); prints JSON/text lines, never asserts.
#
#   tests/bench/overload.sh shed      2x capacity through a proxy-like stamping client
#                                     (queue_shed.py), without and with --max-queue-time 1
#   tests/bench/overload.sh stages    instance slots full (503 + Retry-After), connection slots full
#                                     (listen queue), backlog full (SYN retries): listen_queue.py
#   tests/bench/overload.sh cost      hello, -w 1, alternating runs without / with --admin-bind
#                                     (scraped once a second): worker CPU per request and req/s
#
# Env: RUSTCORN_BIN (default target/release/rustcorn), BENCH_GUESTS (directory holding hello.wasm
# and faults.wasm; default target/guests, built there by guest-examples/build.sh if missing),
# BENCH_RUNS (cost: pairs of runs, default 5).
set -Eeuo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${RUSTCORN_BIN:-$repo/target/release/rustcorn}"
guests="${BENCH_GUESTS:-$repo/target/guests}"
[[ -f "$guests/faults.wasm" ]] || bash "$repo/guest-examples/build.sh" "$guests" >&2
work="$(mktemp -d)"
pid=""
trap '[[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

# start GUEST ARGS...: sets app, admin, pid
start() {
    local guest="$1"; shift
    setsid "$bin" serve "$guests/$guest.wasm" -b 127.0.0.1:0 --cache-dir "$work/cache" "$@" \
        >"$work/out" 2>"$work/err" &
    for _ in $(seq 300); do grep -q "listening on" "$work/out" 2>/dev/null && break; sleep 0.1; done
    app="$(grep -o 'listening on http://[0-9.:]*' "$work/out" | sed 's|.*http://||')"
    admin="$(grep -o 'Admin endpoint at: http://[0-9.:]*' "$work/err" | sed 's|.*http://||' || true)"
    pid="$(grep -o 'pid [0-9]*' "$work/out" | head -1 | cut -d' ' -f2)"
}
stop() { kill "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done; pid=""; }

case "${1:-}" in
shed)
    for limit in off 1; do
        extra=(); [[ "$limit" != off ]] && extra=(--max-queue-time "$limit")
        start faults -w 2 "${extra[@]}"
        echo "--max-queue-time $limit, 70 req/s (below capacity 80):"
        python3 "$here/queue_shed.py" "$app" "/sleep?ms=100" 70 10 8 3
        echo "--max-queue-time $limit, 160 req/s (2x capacity):"
        python3 "$here/queue_shed.py" "$app" "/sleep?ms=100" 160 15 8 3
        stop
    done
    ;;
stages)
    start faults -w 1 --instance-slots 2 --admin-bind 127.0.0.1:0
    echo "instance slots full (-w 1 --instance-slots 2, 6 clients):"
    python3 "$here/listen_queue.py" "$app" "$admin" "/sleep?ms=1000" 6
    stop
    start faults -w 1 --worker-connections 2 --backlog 4 --admin-bind 127.0.0.1:0
    echo "connections and backlog full (-w 1 --worker-connections 2 --backlog 4, 12 clients):"
    python3 "$here/listen_queue.py" "$app" "$admin" "/sleep?ms=1000" 12
    stop
    ;;
cost)
    command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
    one() {
        start hello -w 1 "$@"
        local worker scraper=""
        worker="$(cat /proc/"$pid"/task/*/children | tr ' ' '\n' | grep . | head -1)"
        if [[ -n "$admin" ]]; then
            (for _ in 1 2 3 4 5 6; do curl -s "http://$admin/metrics" >/dev/null; sleep 1; done) &
            scraper=$!
        fi
        local t0 t1 n
        t0="$(awk '{print $14+$15}' /proc/"$worker"/stat)"
        n="$(wrk -t1 -c8 -d5s "http://$app/" 2>&1 | awk '/requests in/ {print $1}')"
        t1="$(awk '{print $14+$15}' /proc/"$worker"/stat)"
        [[ -n "$scraper" ]] && wait "$scraper"
        stop
        python3 -c "print(f'{$n/5:.0f} req/s, {($t1-$t0)*1e6/$(getconf CLK_TCK)/$n:.2f} us worker CPU per request')"
    }
    for _ in $(seq "${BENCH_RUNS:-5}"); do
        echo "off: $(one)"
        echo "on:  $(one --admin-bind 127.0.0.1:0)"
    done
    ;;
*)
    sed -n '2,14p' "$0"; exit 2 ;;
esac
