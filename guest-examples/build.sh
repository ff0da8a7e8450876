#!/usr/bin/env bash
# Builds every example guest from source into OUT_DIR:
#   hello.wasm echo.wasm stream.wasm faults.wasm outbound.wasm state.wasm (Rust, cargo --target wasm32-wasip2)
#   p3.wasm (Rust, WASI 0.3: the wasip3 crate, also for wasm32-wasip2)
#   wasip3-http-proxy.wasm (the wasip3 crate's own `http-proxy` example, from its published source)
#   python-app.wasm python-state.wasm              (componentize-py)
#   python-p3.wasm                                 (componentize-py, WASI 0.3)
#   js-app.wasm                                    (componentize-js)
# Usage: guest-examples/build.sh OUT_DIR [--rust-only]
# Each output is rebuilt only when one of its sources is newer than it.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 OUT_DIR [--rust-only]" >&2
  exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
rust_only=false
[[ "${2:-}" == "--rust-only" ]] && rust_only=true

# True when $1 is missing or older than any file under the other arguments.
stale() {
  local target="$1"; shift
  [[ ! -e "$target" ]] && return 0
  [[ -n "$(find "$@" -newer "$target" -type f -not -path '*/node_modules/*' -not -path '*/target/*' -not -path '*/__pycache__/*' -print -quit)" ]]
}

echo "== rust guests" >&2
(cd "$here/rust" && cargo build --quiet --release --target wasm32-wasip2)
for name in hello echo stream faults outbound state p3; do
  built="$here/rust/target/wasm32-wasip2/release/$name.wasm"
  # Replaced atomically and only when it changed: a test may be reading the current one.
  if ! cmp -s "$built" "$out/$name.wasm"; then
    cp -f "$built" "$out/$name.wasm.tmp" && mv -f "$out/$name.wasm.tmp" "$out/$name.wasm"
  fi
done

# The wasip3 crate's own example, exactly as its users first meet it: built from the crate's
# published source (the version guest-examples/rust locks), nothing of it copied here.
wasip3_manifest="$(cd "$here/rust" && cargo metadata --format-version 1 --locked |
  python3 -c 'import json, sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "wasip3"))')"
(cd "$here/rust" && cargo build --quiet --release --target wasm32-wasip2 --manifest-path "$wasip3_manifest" \
  --example http-proxy --target-dir "$here/rust/target/wasip3-example")
built="$here/rust/target/wasip3-example/wasm32-wasip2/release/examples/http_proxy.wasm"
if ! cmp -s "$built" "$out/wasip3-http-proxy.wasm"; then
  cp -f "$built" "$out/wasip3-http-proxy.wasm.tmp" && mv -f "$out/wasip3-http-proxy.wasm.tmp" "$out/wasip3-http-proxy.wasm"
fi

$rust_only && exit 0

if stale "$out/python-app.wasm" "$here/python-app" "$repo/wit"; then
  echo "== python-app (componentize-py)" >&2
  # The console script sits beside the interpreter pip installed it for (even without a PATH shim).
  componentize_py="$(command -v componentize-py || python3 -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "componentize-py"))')"
  (cd "$here/python-app" && "$componentize_py" -d "$repo/wit" -w app componentize app -o "$out/python-app.wasm.tmp" >&2)
  mv -f "$out/python-app.wasm.tmp" "$out/python-app.wasm"
fi

if stale "$out/python-state.wasm" "$here/python-state" "$repo/wit"; then
  echo "== python-state (componentize-py)" >&2
  componentize_py="$(command -v componentize-py || python3 -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "componentize-py"))')"
  (cd "$here/python-state" && "$componentize_py" -d "$repo/wit" -w app-with-state componentize app -o "$out/python-state.wasm.tmp" >&2)
  mv -f "$out/python-state.wasm.tmp" "$out/python-state.wasm"
fi
if stale "$out/python-p3.wasm" "$here/python-p3" "$repo/wit-0.3"; then
  echo "== python-p3 (componentize-py, WASI 0.3)" >&2
  componentize_py="$(command -v componentize-py || python3 -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "componentize-py"))')"
  (cd "$here/python-p3" && "$componentize_py" -d "$repo/wit-0.3" -w app componentize app -o "$out/python-p3.wasm.tmp" >&2)
  mv -f "$out/python-p3.wasm.tmp" "$out/python-p3.wasm"
fi

if stale "$out/js-app.wasm" "$here/js-app/app.js" "$here/js-app/package-lock.json" "$repo/wit"; then
  echo "== js-app (componentize-js)" >&2
  if [[ ! -x "$here/js-app/node_modules/.bin/componentize-js" ]]; then
    (cd "$here/js-app" && npm install --no-audit --no-fund --loglevel=error >&2)
  fi
  # componentize-js 0.23.0's StarlingMonkey engine exports wasi:http/incoming-handler@0.2.10
  # exactly, so the JS app builds against the same WIT relabelled 0.2.10. The host accepts any
  # wasi 0.2.x component (semver-compatible linking), so the result serves the same.
  js_wit="$out/.wit-0.2.10"
  rm -rf "$js_wit"
  mkdir -p "$js_wit/deps"
  for f in "$repo"/wit/world.wit "$repo"/wit/deps/*.wit; do
    rel="${f#"$repo"/wit/}"
    sed 's/@0\.2\.12/@0.2.10/g; s/version = 0\.2\.1[12]/version = 0.2.10/g' "$f" > "$js_wit/$rel"
  done
  (cd "$here/js-app" && node_modules/.bin/componentize-js app.js --wit "$js_wit" --world-name app -o "$out/js-app.wasm.tmp" >&2)
  mv -f "$out/js-app.wasm.tmp" "$out/js-app.wasm"
fi
