#!/usr/bin/env bash
# rustcorn benchmark harness.
#
# Usage (from anywhere; paths are relative to the repo):
#   tests/bench/run.sh            full run: rustcorn vs wasmtime serve (fresh instances and reusing
#                                 instances), native hyper, Gunicorn gevent, in alternating rounds
#                                 (~10 min with tools cached; the first run also installs them)
#   tests/bench/run.sh --smoke    one round of 1 s loads, rustcorn + native hyper only (no installed
#                                 peers), installs nothing but wrk; exits non-zero when a server never
#                                 gets ready or answers non-2xx. It never asserts on timings.
#   --rebuild                     also `cargo build --release` rustcorn and native-hello when present
#   Env: BENCH_ROUNDS (alternating rounds, default 3; 1 in smoke), BENCH_WORKERS (default nproc),
#        BENCH_CONNS (50), BENCH_DURATION (10 s per measured load; 1 s in smoke),
#        BENCH_GUESTS (guest .wasm directory, default target/guests; built there if stale),
#        RUSTCORN_BIN (default target/release/rustcorn: e.g. to compare two builds),
#        BENCH_WORKLOADS (comma-separated round workloads, default all; e.g. "p3 GET /,p3 GET / shared"),
#        BENCH_ROUNDS_ONLY=1 (skip the single runs after the rounds)
#
# The markdown report goes to stdout, progress to stderr:
#   tests/bench/run.sh > tests/bench/RESULTS-draft.md
#
# What it measures (wrk -t2 -c50 --latency, same settings for every server):
#   Throughput comparisons run in BENCH_ROUNDS alternating rounds. In a round, each server of a
#   workload is started fresh, warmed up (2 s) and loaded once (10 s), one after the other; rustcorn
#   goes first in odd rounds and last in even rounds (the peers then in reverse order), and the
#   1-minute load average is recorded at the start and end of each round. The report gives, per
#   workload, each round's req/s, p99 and rustcorn ÷ peer ratios, then the median req/s and p99 and
#   the median of the per-round ratios, and a Targets table built from those medians.
#   hello        rustcorn, wasmtime serve, wasmtime serve --max-instance-reuse-count 1000,
#                native hyper (tests/bench/native-hello), gunicorn -k gevent (a Python WSGI hello)
#   echo-64k     POST 64 KiB bodies to echo.wasm (tests/bench/post64k.lua)        rustcorn, wasmtime
#   python GET / and js GET /  (the componentize-py / componentize-js apps)       rustcorn, wasmtime
#   p3 GET / and python-p3 GET /  (WASI 0.3: the wasip3 hello and the componentize-py 0.3 app)
#                both fresh per request (wasmtime serve --max-instance-reuse-count 1: its 0.3
#                default reuses), and "... shared": both reusing, 128 requests per instance, 16 at
#                once (rustcorn --instance-reuse 128 --instance-concurrency 16, wasmtime serve
#                --max-instance-reuse-count 128 --max-instance-concurrent-reuse-count 16)
# CPU: every load run also records the CPU time (utime + stime, all threads, from /proc) of the
#   server's whole process tree over the measured run, as µs per request, and for rustcorn each
#   worker's share of it (the busiest worker's share: 50 % is an even split over 2 workers).
#   The header names the CPU, the kernel, and whether PAGEMAP_SCAN and userfaultfd async
#   write-protect are available (what the pool's slot reset can use).
# Single runs after the rounds (their comparisons are within one server or like with like):
#   TLS          rustcorn hello over TLS: https h1 (wrk) and h2 (h2load -m10, when h2load is
#                installed: full mode installs nghttp2-client), with a throwaway self-signed certificate
#   cold start   exec -> first 200 with an empty and a warm compile cache, hello and Python app
#                (rustcorn --cache-dir fresh vs reused; wasmtime: XDG_CACHE_HOME fresh vs reused)
#   respawn      under load, kill -9 a rustcorn worker: ms until the new worker forks, logs
#                "Worker ready", and serves its first request (access log %(p)s)
#   memory       total PSS (arbiter + workers) of rustcorn -w 1 and -w 4 on the Python app, warmed
#   fairness     faults.wasm /ok p99 alone vs. while one client loops /spin?ms=2000
#
# Installs and caches what it needs: wrk (apt), wasmtime-cli 48.0.8 (cargo install --root
# target/bench-tools), gunicorn + gevent (venv at target/bench-tools/venv); builds the guests into
# target/guests. Every server it starts runs in its own process group and is stopped on exit.
set -Eeuo pipefail
shopt -s inherit_errexit
# Every server runs as it would by default: with RUST_BACKTRACE set, each error a library makes
# walks the stack (wasmtime makes one per WASI 0.3 store with a parked task, in every server).
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tools="$repo/target/bench-tools"
guests="${BENCH_GUESTS:-$repo/target/guests}"
WASMTIME_VERSION=48.0.8
GUNICORN_PIN="${BENCH_GUNICORN_PIN:-gunicorn[gevent]==27.0.1 gevent==26.9.0}"

mode=full
rebuild=false
for arg in "$@"; do
  case "$arg" in
    --smoke) mode=smoke ;;
    --rebuild) rebuild=true ;;
    -h|--help) sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

workers="${BENCH_WORKERS:-$(nproc)}"
conns="${BENCH_CONNS:-50}"
if [[ $mode == smoke ]]; then
  dur="${BENCH_DURATION:-1}"; warmup=0; rounds="${BENCH_ROUNDS:-1}"
  cold_empty_runs=1; cold_warm_runs=1; respawn_kills=1; spin_ms=300; mem_warmup=1
else
  dur="${BENCH_DURATION:-10}"; warmup=2; rounds="${BENCH_ROUNDS:-3}"
  cold_empty_runs=3; cold_warm_runs=5; respawn_kills=3; spin_ms=2000; mem_warmup=3
fi
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_ROUNDS must be a positive integer, not '$rounds'" >&2; exit 2; }
wrk_args=(-t2 "-c$conns" --timeout 10s --latency)

run="$(mktemp -d /tmp/rustcorn-bench.XXXXXX)"
results="$run/results.jsonl"
pids="$run/pids"
: > "$results"
: > "$pids"
failed=()

log() { printf '%s\n' "$*" >&2; }

# Stops every process group registered in $pids (servers, wrk, clients): TERM, then KILL after 10 s.
cleanup() {
  [[ -s "$pids" ]] || return 0
  local p alive
  while read -r p; do kill -TERM -- "-$p" 2>/dev/null || true; done < "$pids"
  for _ in $(seq 100); do
    alive=false
    while read -r p; do kill -0 -- "-$p" 2>/dev/null && alive=true; done < "$pids"
    $alive || break
    sleep 0.1
  done
  while read -r p; do kill -KILL -- "-$p" 2>/dev/null || true; done < "$pids"
  : > "$pids"
}
step_pid=
finish() {
  local rc=$?
  set +e
  [[ -z "$step_pid" ]] || { kill "$step_pid" 2>/dev/null; wait "$step_pid" 2>/dev/null; }
  cleanup
  if ((rc == 0)); then rm -rf "$run"; else log "logs kept in $run"; fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- tools -------------------------------------------------------------------------------------

PY="$(python3 -c 'import sys; print(sys.executable)')"   # the real interpreter, not a pyenv shim
bt() { "$PY" "$here/benchtool.py" "$@"; }
as_root() { if ((EUID == 0)); then "$@"; else sudo "$@"; fi; }

ensure_wrk() {
  command -v wrk >/dev/null && return
  log "== installing wrk (apt)"
  as_root apt-get install -y wrk >&2 || { as_root apt-get update >&2 && as_root apt-get install -y wrk >&2; }
}

wasmtime="$tools/bin/wasmtime"
ensure_wasmtime() {
  if [[ -x "$wasmtime" ]] && "$wasmtime" --version | grep -q " $WASMTIME_VERSION"; then return; fi
  log "== cargo install wasmtime-cli $WASMTIME_VERSION into $tools (takes ~10 min on 2 cores)"
  nice -n 10 cargo install wasmtime-cli --version "$WASMTIME_VERSION" --locked --root "$tools" >&2
}

gunicorn="$tools/venv/bin/gunicorn"
ensure_gunicorn() {
  if [[ -x "$gunicorn" ]] && "$tools/venv/bin/python" -c 'import gunicorn.workers.ggevent' 2>/dev/null; then return; fi
  log "== pip install $GUNICORN_PIN into $tools/venv"
  "$PY" -m venv "$tools/venv"
  # shellcheck disable=SC2086
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check $GUNICORN_PIN >&2
}

build() {
  if [[ -z "${RUSTCORN_BIN:-}" ]] && { $rebuild || [[ ! -x "$rustcorn" ]]; }; then
    log "== cargo build --release -p rustcorn"
    (cd "$repo" && cargo build --release -p rustcorn >&2)
  fi
  if $rebuild || [[ ! -x "$repo/target/release/native-hello" ]]; then
    log "== cargo build --release -p native-hello"
    (cd "$repo" && cargo build --release -p native-hello >&2)
  fi
  log "== guests -> $guests"
  bash "$repo/guest-examples/build.sh" "$guests" >&2
}

rustcorn="${RUSTCORN_BIN:-$repo/target/release/rustcorn}"
native="$repo/target/release/native-hello"
# Compile cache for the load runs (cold-start runs use their own fresh directories). Keyed by
# the wasm hash and the engine's compatibility hash, so reusing it across runs is safe.
rustcorn_cache="$repo/target/bench-cache/rustcorn"

# ---- servers -----------------------------------------------------------------------------------

# spawn CMD..: runs CMD in the background in its own session (its pid is its process group id),
# registered for cleanup. Sets $spawned.
spawn() {
  setsid "$@" < /dev/null &
  spawned=$!
  echo "$spawned" >> "$pids"
}
# run_wrk ARGS..: wrk in its own registered process group, so that an interrupted run stops it too.
run_wrk() { spawn "$wrk_bin" "$@"; wait "$spawned"; }

# start NAME CMD..: spawns a server with its output in $run/NAME.{out,err}. Sets $server_pid.
start() {
  local name="$1"; shift
  spawn "$@" > "$run/$name.out" 2> "$run/$name.err"
  server_pid=$spawned
}

# Each start_* sets $url (http://127.0.0.1:PORT) once the server has answered a first 200 on PATH.
start_rustcorn() {   # NAME APP PATH [extra rustcorn args]
  local name="$1" app="$2" path="$3"; shift 3
  start "$name" "$rustcorn" serve "$app" -b 127.0.0.1:0 -w "$workers" --cache-dir "$rustcorn_cache" "$@"
  url="$(bt ready --pid "$server_pid" --stdout "$run/$name.out" --path "$path" --timeout 300)" \
    || { tail -n 20 "$run/$name.err" >&2; return 1; }
}
# A throwaway certificate for the TLS rows (made once per run).
tls_args() {
  if [[ ! -f "$run/tls.pem" ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
      -addext subjectAltName=IP:127.0.0.1 -keyout "$run/tls.key" -out "$run/tls.pem" 2>/dev/null
  fi
  printf '%s\n' --certfile "$run/tls.pem" --keyfile "$run/tls.key"
}
start_rustcorn_tls() {   # NAME APP PATH [extra rustcorn args]: like start_rustcorn, over TLS; $url is https://...
  local name="$1" app="$2" path="$3"; shift 3
  mapfile -t extra < <(tls_args)
  start "$name" "$rustcorn" serve "$app" -b 127.0.0.1:0 -w "$workers" --cache-dir "$rustcorn_cache" "${extra[@]}" "$@"
  url="$(bt ready --tls --pid "$server_pid" --stdout "$run/$name.out" --path "$path" --timeout 300)" \
    || { tail -n 20 "$run/$name.err" >&2; return 1; }
}
start_native() {
  start native "$native" 127.0.0.1:0 "$workers"
  url="$(bt ready --pid "$server_pid" --stdout "$run/native.out" --timeout 60)"
}
start_wasmtime() {   # NAME APP PATH [extra wasmtime serve args]
  local name="$1" app="$2" path="$3" port
  shift 3
  port="$(bt free-port)"
  start "$name" env XDG_CACHE_HOME="$repo/target/bench-cache/xdg" \
    "$wasmtime" serve -Scli -W timeout=30s "$@" --addr "127.0.0.1:$port" "$app"
  url="$(bt ready --pid "$server_pid" --url "http://127.0.0.1:$port" --path "$path" --timeout 300)" \
    || { tail -n 20 "$run/$name.err" >&2; return 1; }
}
start_gunicorn() {
  local port
  port="$(bt free-port)"
  start gunicorn "$gunicorn" -k gevent -w 5 -b "127.0.0.1:$port" --chdir "$here" --log-level warning wsgi_hello:app
  url="$(bt ready --pid "$server_pid" --url "http://127.0.0.1:$port" --timeout 60)"
}

# wrk_run OUT URL [wrk args]: an optional warm-up, then the measured run into OUT, with the CPU
# ticks of the server's process tree ($server_pid and its descendants) just before and after it in
# OUT.cpu-before and OUT.cpu-after.
wrk_run() {
  local out="$1" target="$2"; shift 2
  if ((warmup > 0)); then run_wrk "${wrk_args[@]}" "-d${warmup}s" "$@" "$target" > /dev/null; fi
  bt cpu "$server_pid" > "$out.cpu-before"
  run_wrk "${wrk_args[@]}" "-d${dur}s" "$@" "$target" > "$out"
  bt cpu "$server_pid" > "$out.cpu-after"
}

# load WORKLOAD SERVER PATH [wrk args]: drive the server at $url and record the figures (with the
# round number when it runs inside an alternating round: $round, set by run_round).
round=
load() {
  local workload="$1" server="$2" path="$3"; shift 3
  local name="wrk-$workload-$server${round:+-r$round}"
  local out="$run/${name//[^A-Za-z0-9._-]/_}.txt"
  wrk_run "$out" "$url$path" "$@"
  bt record "$results" --wrk "$out" --cpu-before "$out.cpu-before" --cpu-after "$out.cpu-after" t=wrk workload="$workload" server="$server" ${round:+round="$round"}
}

check_echo() { bt echo-check --url "$url/echo" --bytes 65536; }   # before it is load-tested

# ---- steps -------------------------------------------------------------------------------------

# step NAME FN ARGS..: runs FN in a subshell with errexit; its servers are stopped when it ends.
# A failing step is recorded and the run goes on; the exit status reports it at the end.
step() {
  local name="$1"; shift
  log "== $name"
  local t0=$SECONDS
  set +e
  (
    set -e
    trap cleanup EXIT
    "$@"
  ) &
  step_pid=$!
  wait "$step_pid"
  local rc=$?
  step_pid=
  set -e
  log "   ($((SECONDS - t0)) s)"
  if ((rc != 0)); then
    failed+=("$name")
    bt record "$results" t=fail step="$name" msg="exit status $rc; logs in $run"
    log "!! step failed: $name"
  fi
}

hello_rustcorn()  { start_rustcorn hello "$guests/hello.wasm" /; load hello rustcorn /; }
hello_wasmtime()  { start_wasmtime hello "$guests/hello.wasm" /; load hello "wasmtime serve" /; }
hello_wasmtime_reuse() {
  start_wasmtime hello-reuse "$guests/hello.wasm" / --max-instance-reuse-count 1000
  load hello "$reuse_label" /
}
hello_https()     { start_rustcorn_tls hello-tls "$guests/hello.wasm" /; load hello "rustcorn https (h1)" /; }
hello_h2() {
  # h2load does not reconnect after a GOAWAY (browsers and other clients do): with the default
  # --keep-alive-max-requests 1000 its streams past each connection's 1000th would fail, so this
  # row measures the protocol with the cap off.
  start_rustcorn_tls hello-h2 "$guests/hello.wasm" / --keep-alive-max-requests 0
  local out="$run/h2load-hello.txt" streams=10
  # Same connection count as wrk; -m: concurrent streams per connection.
  if ((warmup > 0)); then spawn h2load -c "$conns" -t 2 -m "$streams" -D "$warmup" "$url/" > /dev/null; wait "$spawned"; fi
  spawn h2load -c "$conns" -t 2 -m "$streams" -D "$dur" "$url/" > "$out"; wait "$spawned"
  bt record "$results" --h2load "$out" t=wrk workload=hello server="rustcorn h2 (TLS, h2load -m$streams)"
}
hello_native()    { start_native; load hello "native hyper" /; }
hello_gunicorn()  { start_gunicorn; load hello "gunicorn gevent" /; }
echo_rustcorn()   { start_rustcorn echo "$guests/echo.wasm" /; check_echo; load echo-64k rustcorn /echo -s "$here/post64k.lua"; }
echo_wasmtime()   { start_wasmtime echo "$guests/echo.wasm" /; check_echo; load echo-64k "wasmtime serve" /echo -s "$here/post64k.lua"; }
app_rustcorn()    { start_rustcorn "$1" "$guests/$1.wasm" /; load "$1 GET /" rustcorn /; }
# Fresh per request for both worlds (the 0.2 default; the 0.3 default reuses).
app_wasmtime()    { start_wasmtime "$1" "$guests/$1.wasm" / --max-instance-reuse-count 1; load "$1 GET /" "wasmtime serve" /; }
shared_args=(128 16)   # requests per instance, at once
app_rustcorn_shared() {
  start_rustcorn "$1-shared" "$guests/$1.wasm" / --instance-reuse "${shared_args[0]}" --instance-concurrency "${shared_args[1]}"
  load "$1 GET / shared" rustcorn /
}
app_wasmtime_shared() {
  start_wasmtime "$1-shared" "$guests/$1.wasm" / --max-instance-reuse-count "${shared_args[0]}" \
    --max-instance-concurrent-reuse-count "${shared_args[1]}"
  load "$1 GET / shared" "wasmtime serve" /
}

cold_rustcorn() {   # APP_NAME
  local app="$1" dir ms i
  for ((i = 1; i <= cold_empty_runs; i++)); do
    dir="$run/cold-rustcorn-$app-$i"
    ms="$(bt coldstart --pids-file "$pids" --out "$run/cold.out" --err "$run/cold.err" -- \
      "$rustcorn" serve "$guests/$app.wasm" -b 127.0.0.1:0 -w "$workers" --cache-dir "$dir")"
    log "  rustcorn $app empty cache: $ms ms"
    bt record "$results" t=cold app="$app" server=rustcorn cache=empty ms="$ms"
  done
  for ((i = 1; i <= cold_warm_runs; i++)); do
    ms="$(bt coldstart --pids-file "$pids" --out "$run/cold.out" --err "$run/cold.err" -- \
      "$rustcorn" serve "$guests/$app.wasm" -b 127.0.0.1:0 -w "$workers" --cache-dir "$dir")"
    log "  rustcorn $app warm cache: $ms ms"
    bt record "$results" t=cold app="$app" server=rustcorn cache=warm ms="$ms"
  done
}

cold_wasmtime() {   # APP_NAME; wasmtime's default cache lives in $XDG_CACHE_HOME/wasmtime
  local app="$1" dir ms i port
  for ((i = 1; i <= cold_empty_runs + cold_warm_runs; i++)); do
    ((i <= cold_empty_runs)) && dir="$run/cold-wasmtime-$app-$i"
    port="$(bt free-port)"
    ms="$(bt coldstart --pids-file "$pids" --out "$run/cold.out" --err "$run/cold.err" \
      --url "http://127.0.0.1:$port" --env XDG_CACHE_HOME="$dir" -- \
      "$wasmtime" serve -Scli -W timeout=30s --addr "127.0.0.1:$port" "$guests/$app.wasm")"
    local cache=empty; ((i > cold_empty_runs)) && cache=warm
    log "  wasmtime serve $app $cache cache: $ms ms"
    bt record "$results" t=cold app="$app" server="wasmtime serve" cache="$cache" ms="$ms"
  done
  # The warm runs only mean something if wasmtime did write its cache where we pointed it.
  [[ -n "$(ls -A "$dir/wasmtime/modules" 2>/dev/null)" ]] || { log "wasmtime wrote no cache under $dir"; return 1; }
}

respawn() {
  start_rustcorn respawn "$guests/hello.wasm" / \
    --access-logfile "$run/access.log" --access-logformat '%(p)s %(s)s'
  local arbiter=$server_pid wrk_secs=$((respawn_kills * 2 + 2))
  spawn "$wrk_bin" "${wrk_args[@]}" "-d${wrk_secs}s" "$url/" > "$run/wrk-respawn.txt"
  local wrk_pid=$spawned
  sleep 1
  bt respawn --arbiter "$arbiter" --errlog "$run/respawn.err" --accesslog "$run/access.log" \
    --probe "$url/" --count "$respawn_kills" --interval 2 --record "$results"
  wait "$wrk_pid"
  # Connections of the killed worker are reset: socket errors are expected, non-2xx are not.
  bt record "$results" --wrk "$run/wrk-respawn.txt" --allow-errors t=wrk-respawn server=rustcorn workload=respawn
  local non2xx
  non2xx="$(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$run/wrk-respawn.txt" | grep -o '[0-9]*$' || true)"
  [[ -z "$non2xx" ]] || { log "respawn run had $non2xx non-2xx responses"; return 1; }
}

memory_rustcorn() {   # WORKERS
  local w="$1"
  workers="$w" start_rustcorn "mem-$w" "$guests/python-app.wasm" /
  run_wrk -t2 -c8 "-d${mem_warmup}s" --latency "$url/" > "$run/wrk-mem-$w.txt"
  bt record "$results" --wrk "$run/wrk-mem-$w.txt" t=warmup server=rustcorn workload="warm-up for -w $w"
  sleep 0.5
  log "  PSS: $(bt pss --record "$results" "$server_pid" t=pss server=rustcorn workers="$w")"
}

memory_wasmtime() {
  start_wasmtime mem-wasmtime "$guests/python-app.wasm" /
  run_wrk -t2 -c8 "-d${mem_warmup}s" --latency "$url/" > "$run/wrk-mem-wasmtime.txt"
  bt record "$results" --wrk "$run/wrk-mem-wasmtime.txt" t=warmup server="wasmtime serve" workload="warm-up"
  sleep 0.5
  log "  PSS: $(bt pss --record "$results" "$server_pid" t=pss server="wasmtime serve" workers=1)"
}

fairness() {   # SERVER_LABEL START_FN
  local label="$1" starter="$2"
  "$starter" "fair-${label// /_}" "$guests/faults.wasm" /ok
  local out="$run/wrk-fair-${label// /_}"
  wrk_run "$out-alone.txt" "$url/ok"
  bt record "$results" --wrk "$out-alone.txt" t=fair phase=alone server="$label" spin_ms="$spin_ms" workload="/ok alone"
  spawn "$PY" "$here/benchtool.py" loop --url "$url/spin?ms=$spin_ms" --seconds "$((warmup + dur))" \
    > "$run/spin-loop.json"
  local loop_pid=$spawned
  sleep 0.2
  wrk_run "$out-spin.txt" "$url/ok"
  wait "$loop_pid"
  local spins ok
  spins="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["count"])' "$run/spin-loop.json")"
  ok="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["statuses"].get("200", 0))' "$run/spin-loop.json")"
  bt record "$results" --wrk "$out-spin.txt" t=fair phase=spin server="$label" spin_ms="$spin_ms" spins="$spins" \
    workload="/ok with /spin?ms=$spin_ms looping"
  [[ "$spins" == "$ok" && "$spins" -gt 0 ]] || { log "spin client: $(cat "$run/spin-loop.json")"; return 1; }
}

# ---- alternating rounds ------------------------------------------------------------------------

# The label of wasmtime serve reusing instances (the report's p99 target names it too).
reuse_label="wasmtime serve reuse 1000"
round_workloads=(hello echo-64k "python-app GET /" "js-app GET /"
  "p3 GET /" "p3 GET / shared" "python-p3 GET /" "python-p3 GET / shared")
if [[ -n "${BENCH_WORKLOADS:-}" ]]; then IFS=',' read -ra round_workloads <<< "$BENCH_WORKLOADS"; fi

# servers_of WORKLOAD: one line per server, "LABEL|FUNCTION [ARG]", rustcorn first; peers that
# full mode installs (wasmtime, gunicorn) only in full mode. native hyper is built with the
# workspace, so smoke mode keeps it: the per-round ratio code then runs in the test suite too.
servers_of() {
  local full=false
  [[ $mode == full ]] && full=true
  case "$1" in
    hello)
      echo "rustcorn|hello_rustcorn"
      if $full; then echo "wasmtime serve|hello_wasmtime"; echo "$reuse_label|hello_wasmtime_reuse"; fi
      echo "native hyper|hello_native"
      if $full; then echo "gunicorn gevent|hello_gunicorn"; fi ;;
    echo-64k)
      echo "rustcorn|echo_rustcorn"
      if $full; then echo "wasmtime serve|echo_wasmtime"; fi ;;
    *" GET / shared")
      echo "rustcorn|app_rustcorn_shared ${1% GET / shared}"
      if $full; then echo "wasmtime serve|app_wasmtime_shared ${1% GET / shared}"; fi ;;
    *" GET /")
      echo "rustcorn|app_rustcorn ${1% GET /}"
      if $full; then echo "wasmtime serve|app_wasmtime ${1% GET /}"; fi ;;
    *) log "no servers for workload $1"; return 1 ;;
  esac
}

load1() { cut -d' ' -f1 /proc/loadavg; }

# run_round WORKLOAD N: starts each server of WORKLOAD fresh and loads it once, back to back, in
# the order of servers_of in odd rounds and in reverse order in even rounds. Each server is its own
# step (a failing one is recorded and the round goes on). Records the round's 1-minute load
# average at its start and end, and the order it ran in.
run_round() {
  local wl="$1" n="$2" entries=() ordered=() labels=() e i load_start
  mapfile -t entries < <(servers_of "$wl")
  if ((n % 2 == 1)); then
    ordered=("${entries[@]}")
  else
    for ((i = ${#entries[@]} - 1; i >= 0; i--)); do ordered+=("${entries[i]}"); done
  fi
  load_start="$(load1)"
  for e in "${ordered[@]}"; do
    local label="${e%%|*}" fn=()
    read -ra fn <<< "${e#*|}"
    labels+=("$label")
    round="$n" step "$wl, round $n/$rounds: $label" "${fn[@]}"
  done
  local order
  order="$(printf '%s, ' "${labels[@]}")"
  bt record "$results" t=round workload="$wl" round="$n" load_start="$load_start" load_end="$(load1)" \
    order="${order%, }"
}

# ---- main --------------------------------------------------------------------------------------

ensure_wrk
wrk_bin="$(command -v wrk)"
if [[ $mode == full ]]; then
  ensure_wasmtime
  ensure_gunicorn
fi
build
mkdir -p "$rustcorn_cache"

peer_versions=()
if [[ $mode == full ]]; then
  peer_versions=("wasmtime=$("$wasmtime" --version)" "gunicorn=$("$gunicorn" --version)")
fi
bt record "$results" t=meta load_start="$(cut -d' ' -f1-3 /proc/loadavg)" mode="$mode" date="$(date -u '+%Y-%m-%d %H:%M UTC')" nproc="$(nproc)" \
  cpu="$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')" kernel="$(uname -r)" $(bt machine) \
  mem="$(awk '/MemTotal/ {printf "%.0f GiB RAM", $2 / 1048576}' /proc/meminfo)" \
  rev="$(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD -- host 2>/dev/null || echo ' + uncommitted host/ changes') (binary built $(date -u -r "$rustcorn" '+%Y-%m-%d %H:%M UTC'))" \
  wrk="$("$wrk_bin" --version 2>&1 | head -n 1 | awk '{print "wrk " $2}')" \
  wrk_cmd="wrk ${wrk_args[*]} -d${dur}s" workers="$workers" rounds="$rounds" warmup="$warmup" \
  "${peer_versions[@]}"

# peer CMD..: only in full mode.
peer() { if [[ $mode == full ]]; then "$@"; fi; }

# Rounds outermost: each workload's rounds are spread over the whole run, so a slow period of the
# machine lands in one round of several workloads rather than in every round of one.
for ((r = 1; r <= rounds; r++)); do
  for wl in "${round_workloads[@]}"; do run_round "$wl" "$r"; done
done

if [[ "${BENCH_ROUNDS_ONLY:-0}" != 1 ]]; then
  step "hello: rustcorn https (h1)" hello_https
  if [[ $mode == full ]] && ! command -v h2load >/dev/null; then
    log "== installing h2load (apt nghttp2-client)"
    as_root apt-get install -y nghttp2-client >&2 || { as_root apt-get update >&2 && as_root apt-get install -y nghttp2-client >&2; } || true
  fi
  if command -v h2load >/dev/null; then step "hello: rustcorn h2" hello_h2; else log "== h2load not installed: no h2 row"; fi
  step "cold start hello: rustcorn" cold_rustcorn hello
  peer step "cold start hello: wasmtime serve" cold_wasmtime hello
  if [[ $mode == full ]]; then
    step "cold start python-app: rustcorn" cold_rustcorn python-app
    step "cold start python-app: wasmtime serve" cold_wasmtime python-app
  fi
  step "respawn: rustcorn" respawn
  step "memory: rustcorn -w 1" memory_rustcorn 1
  step "memory: rustcorn -w 4" memory_rustcorn 4
  peer step "memory: wasmtime serve" memory_wasmtime
  step "fairness: rustcorn" fairness rustcorn start_rustcorn
  peer step "fairness: wasmtime serve" fairness "wasmtime serve" start_wasmtime
fi

bt record "$results" t=meta load_end="$(cut -d' ' -f1-3 /proc/loadavg)"
bt report "$results"
if ((${#failed[@]})); then
  log "FAILED steps: ${failed[*]}"
  exit 1
fi
log "all steps passed"
