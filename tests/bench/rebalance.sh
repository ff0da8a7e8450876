#!/usr/bin/env bash
# Keep-alive balance after a worker respawn (issue 12, item 6); prints text, never asserts.
#
#   tests/bench/rebalance.sh [CAP...]     default caps: 1000 0
#
# For each --keep-alive-max-requests CAP: hello on -w 2 with an access log of "pid status time",
# wrk -t2 -c50 for BENCH_SECONDS (20); after BENCH_KILL_AT seconds (5) one worker is killed with
# SIGKILL and the arbiter forks a replacement. Prints how many requests each pid served after the
# kill and the replacement's share of each second after it (counts from the access log, so
# independent of machine load; the first and last seconds are partial) and wrk's req/s (timing:
# indicative only unless the machine is otherwise idle). Without a cap, wrk's 50 keep-alive
# connections stay on the surviving worker and the replacement serves (almost) nothing.
#
# Env: RUSTCORN_BIN (default target/release/rustcorn), BENCH_GUESTS (directory holding hello.wasm;
# default target/guests, built there by guest-examples/build.sh if missing), BENCH_SECONDS,
# BENCH_KILL_AT.
set -Eeuo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${RUSTCORN_BIN:-$repo/target/release/rustcorn}"
guests="${BENCH_GUESTS:-$repo/target/guests}"
seconds="${BENCH_SECONDS:-20}"
kill_at="${BENCH_KILL_AT:-5}"
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
[[ -f "$guests/hello.wasm" ]] || bash "$repo/guest-examples/build.sh" "$guests" >&2
work="$(mktemp -d)"
pid=""
trap '[[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

workers() { cat /proc/"$pid"/task/*/children 2>/dev/null | tr ' ' '\n' | grep . | sort -n || true; }

one() {
    local cap="$1" log="$work/access-$1.log"
    : >"$log"
    setsid "$bin" serve "$guests/hello.wasm" -w 2 -b 127.0.0.1:0 --cache-dir "$work/cache" \
        --keep-alive-max-requests "$cap" --access-logfile "$log" --access-logformat '%(p)s %(s)s %(t)s' \
        >"$work/out" 2>"$work/err" &
    for _ in $(seq 300); do grep -q "listening on" "$work/out" 2>/dev/null && break; sleep 0.1; done
    local app
    app="$(grep -o 'listening on http://[0-9.:]*' "$work/out" | sed 's|.*http://||')"
    pid="$(grep -o 'pid [0-9]*' "$work/out" | head -1 | cut -d' ' -f2)"
    for _ in $(seq 300); do [[ "$(workers | wc -l)" -ge 2 ]] && break; sleep 0.1; done

    wrk -t2 -c50 -d"${seconds}s" "http://$app/" >"$work/wrk" 2>&1 &
    local load=$!
    sleep "$kill_at"
    local victim survivor offset
    victim="$(workers | head -1)"
    survivor="$(workers | tail -1)"
    offset="$(wc -l <"$log")"
    kill -9 "$victim"
    wait "$load"
    local replacement
    replacement="$(workers | grep -vx "$survivor" | head -1)"
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    pid=""

    echo "--keep-alive-max-requests $cap: requests served after the kill at ${kill_at}s of ${seconds}s"
    # %(p)s is "<pid>".
    tail -n +"$((offset + 1))" "$log" | awk '{print $1}' | tr -d '<>' | sort | uniq -c | sort -rn |
        while read -r count who; do
            local role="?"
            [[ "$who" == "$survivor" ]] && role="survivor"
            [[ "$who" == "$replacement" ]] && role="replacement"
            [[ "$who" == "$victim" ]] && role="killed"
            printf '  pid %-8s %-12s %9d\n' "$who" "$role" "$count"
        done
    # The replacement's share of each second's requests after the kill (1 s buckets of %(t)s).
    echo "  replacement's share per second after the kill: $(tail -n +"$((offset + 1))" "$log" |
        awk -v r="<$replacement>" '{ s = $3; if (!(s in n)) order[k++] = s; n[s]++; if ($1 == r) m[s]++ }
            END { for (i = 0; i < k; i++) printf "%d%% ", 100 * m[order[i]] / n[order[i]] }')"
    echo "  non-200 after the kill: $(tail -n +"$((offset + 1))" "$log" | awk '$2 != 200' | wc -l)"
    echo "  wrk: $(grep -E 'requests in|Requests/sec|Socket errors' "$work/wrk" | tr -s ' ' | paste -sd';')"
}

caps=("$@")
[[ ${#caps[@]} -gt 0 ]] || caps=(1000 0)
for cap in "${caps[@]}"; do one "$cap"; done
