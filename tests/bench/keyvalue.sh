#!/usr/bin/env bash
# Key-value workload (issue 19): what a wasi:keyvalue operation costs on each backend; prints a
# markdown report on stdout, progress on stderr, never asserts.
#
#   tests/bench/keyvalue.sh > tests/bench/RESULTS-draft-keyvalue.md
#
# Three workloads, rustcorn -w 2 each, wrk -t2 -c50 --latency, BENCH_SECONDS (10) after a 2 s
# warm-up, in BENCH_ROUNDS (3) alternating rounds (the order reverses every other round):
#   hello        hello.wasm, GET /                                    (no key-value at all)
#   kv-sqlite    state.wasm with --keyvalue default=sqlite:FILE       tests/bench/keyvalue.lua: half
#   kv-redis     state.wasm with --keyvalue default=redis://...       increment a hot key, half get
#                                                                     a random one of 10,000 keys
# Each workload starts a fresh rustcorn (and, for kv-redis, a fresh redis-server on a free
# loopback port, nothing saved to disk), stores the 10,000 keys, warms up, then measures: req/s,
# p99, and CPU µs per request of rustcorn's process tree (benchtool.py cpu) and, separately, of
# redis-server. The 1-minute load average is printed before and after each round: the machine
# may be shared.
#
# Env: RUSTCORN_BIN (default target/release/rustcorn), BENCH_GUESTS (default target/tmp/guests,
# built by the integration tests or guest-examples/build.sh), BENCH_ROUNDS, BENCH_SECONDS.
# Needs wrk and redis-server (`.ci/run` installs both).
set -Eeuo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${RUSTCORN_BIN:-$repo/target/release/rustcorn}"
guests="${BENCH_GUESTS:-$repo/target/tmp/guests}"
rounds="${BENCH_ROUNDS:-3}"
seconds="${BENCH_SECONDS:-10}"
tool=(python3 "$here/benchtool.py")
for need in wrk redis-server; do
  command -v "$need" >/dev/null || { echo "$need is needed (apt-get install $need)" >&2; exit 1; }
done
[[ -x "$bin" && -f "$guests/state.wasm" && -f "$guests/hello.wasm" ]] \
  || { echo "needs $bin and $guests/{state,hello}.wasm (cargo build --release; guest-examples/build.sh $guests)" >&2; exit 2; }
work="$(mktemp -d)"
server="" redis=""
cleanup() {
  [[ -n "$server" ]] && kill -- "-$server" 2>/dev/null
  [[ -n "$redis" ]] && kill "$redis" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
results="$work/results.jsonl"

load1() { cut -d' ' -f1 /proc/loadavg; }

# Starts redis-server on a free port; sets $redis (pid) and $redis_port; waits for PING.
start_redis() {
  redis_port="$("${tool[@]}" free-port)"
  mkdir -p "$work/redis"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work/redis" \
    >"$work/redis.log" 2>&1 &
  redis=$!
  for _ in $(seq 500); do
    [[ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" == PONG ]] && return 0
    sleep 0.01
  done
  echo "redis-server did not answer PING" >&2; exit 1
}

stop() {
  kill -- "-$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=""
  if [[ -n "$redis" ]]; then kill "$redis"; wait "$redis" 2>/dev/null || true; redis=""; fi
}

# one ROUND WORKLOAD: start, fill, warm up, measure, record, stop.
one() {
  local round="$1" workload="$2" app="$guests/state.wasm" args=() script=(-s "$here/keyvalue.lua") path=/
  case "$workload" in
    hello) app="$guests/hello.wasm"; script=() ;;
    kv-sqlite) rm -f "$work"/kv.db*; args=(--keyvalue "default=sqlite:$work/kv.db") ;;
    kv-redis) start_redis; args=(--keyvalue "default=redis://127.0.0.1:$redis_port") ;;
  esac
  setsid "$bin" serve "$app" -w 2 -b 127.0.0.1:0 --cache-dir "$work/cache" "${args[@]}" \
    >"$work/out" 2>"$work/err" &
  server=$!
  local base
  base="$("${tool[@]}" ready --pid "$server" --stdout "$work/out" --timeout 120)"
  if [[ "$workload" != hello ]]; then
    for _ in 1 2; do curl -sf "$base/fill/default/5000" >/dev/null; done
    curl -sf "$base/fill/default/10000" >/dev/null
  fi
  wrk -t2 -c50 -d2s "${script[@]}" "$base$path" >/dev/null
  "${tool[@]}" cpu "$server" >"$work/cpu0"
  [[ -n "$redis" ]] && "${tool[@]}" cpu "$redis" >"$work/rcpu0"
  wrk -t2 -c50 "-d${seconds}s" --latency "${script[@]}" "$base$path" >"$work/wrk"
  "${tool[@]}" cpu "$server" >"$work/cpu1"
  "${tool[@]}" record "$results" --wrk "$work/wrk" --cpu-before "$work/cpu0" --cpu-after "$work/cpu1" \
    server=rustcorn "workload=$workload" "round=$round"
  if [[ -n "$redis" ]]; then
    "${tool[@]}" cpu "$redis" >"$work/rcpu1"
    "${tool[@]}" record "$results" --wrk "$work/wrk" --cpu-before "$work/rcpu0" --cpu-after "$work/rcpu1" \
      server=redis-server "workload=$workload" "round=$round" 2>/dev/null
  fi
  stop
}

workloads=(hello kv-sqlite kv-redis)
loads="$work/loads"
for round in $(seq "$rounds"); do
  order=("${workloads[@]}")
  (( round % 2 == 0 )) && order=(kv-redis kv-sqlite hello)
  before="$(load1)"
  echo "== round $round: ${order[*]} (load $before)" >&2
  for w in "${order[@]}"; do one "$round" "$w"; done
  echo "$round $(IFS=,; echo "${order[*]}") $before $(load1)" >>"$loads"
done

python3 - "$results" "$loads" "$seconds" <<'PY'
import json, statistics, subprocess, sys
results, loads, seconds = sys.argv[1], sys.argv[2], sys.argv[3]
recs = [json.loads(line) for line in open(results)]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
print(f"CPU: {cpu}; kernel {kernel}; rustcorn -w 2, wrk -t2 -c50, {seconds} s per load after a 2 s warm-up.\n")
print("| round | order | load before | load after |\n|---|---|---|---|")
for line in open(loads):
    r, order, b, a = line.split()
    print(f"| {r} | {order.replace(',', ', ')} | {b} | {a} |")
print("\n| round | workload | req/s | p99 ms | rustcorn CPU µs/req | redis-server CPU µs/req | non-2xx |")
print("|---|---|---|---|---|---|---|")
by = {}
for rec in recs:
    by.setdefault((rec["round"], rec["workload"]), {})[rec["server"]] = rec
for (rnd, w), s in sorted(by.items()):
    r = s["rustcorn"]; rd = s.get("redis-server")
    red = f"{rd['cpu_us_per_req']:.0f}" if rd else "-"
    print(f"| {rnd} | {w} | {r['rps']:,.0f} | {r['p99_ms']:.2f} | {r['cpu_us_per_req']:.0f} | {red} | {r['non2xx']} |")
print("\nMedians over the rounds:\n")
print("| workload | req/s | p99 ms | rustcorn CPU µs/req | redis-server CPU µs/req | CPU µs/req over hello |")
print("|---|---|---|---|---|---|")
med = lambda xs: statistics.median(xs) if xs else float("nan")
hello_cpu = med([s["rustcorn"]["cpu_us_per_req"] for (_, w), s in by.items() if w == "hello"])
for w in ["hello", "kv-sqlite", "kv-redis"]:
    rows = [s for (_, ww), s in by.items() if ww == w]
    cpu_r = med([s["rustcorn"]["cpu_us_per_req"] for s in rows])
    cpu_d = [s["redis-server"]["cpu_us_per_req"] for s in rows if "redis-server" in s]
    red = f"{med(cpu_d):.0f}" if cpu_d else "-"
    extra = cpu_r + (med(cpu_d) if cpu_d else 0) - hello_cpu
    print(f"| {w} | {med([s['rustcorn']['rps'] for s in rows]):,.0f} | {med([s['rustcorn']['p99_ms'] for s in rows]):.2f} | "
          f"{cpu_r:.0f} | {red} | {extra:+.0f} |")
PY
