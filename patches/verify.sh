#!/usr/bin/env bash
# Checks that patches/wasmtime-48.0.8 is exactly the crate published on crates.io plus the diffs
# patches/wasmtime-48.0.8-*.diff (applied in name order), and nothing else. Prints "ok" or the
# difference.
# Usage: patches/verify.sh   (uses cargo's download cache, else fetches the .crate from crates.io)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
crate=wasmtime-48.0.8
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cached=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$crate.crate" 2>/dev/null | head -1 || true)
if [[ -n $cached ]]; then
  cp "$cached" "$work/$crate.crate"
else
  curl -sSfL -o "$work/$crate.crate" "https://static.crates.io/crates/wasmtime/$crate.crate"
fi
tar -xzf "$work/$crate.crate" -C "$work"
rm -f "$work/$crate/.cargo-ok"
for diff in "$here/$crate"-*.diff; do
  (cd "$work/$crate" && patch -s -p1 < "$diff")
done
diff -r "$work/$crate" "$here/$crate"
echo ok
