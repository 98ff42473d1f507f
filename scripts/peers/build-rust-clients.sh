#!/usr/bin/env bash
# Build the Rust hub clients of tests/clients/ (each a tiny cargo program pinning
# one crate, e.g. hf-hub-rs: the hf-hub crate TGI uses) once into the peers cache;
# rebuild one only when its Cargo.toml, Cargo.lock or source changes.
#
#   scripts/peers/build-rust-clients.sh       # build what is missing, print the bin dir
#   MODELPACK_PEERS_DIR=/x scripts/peers/build-rust-clients.sh
#
# Layout: $DIR/<client>-<hash>/bin/<binary>   (<hash>: of the manifest, lock and src/)
#         $DIR/bin/<binary> -> ../<client>-<hash>/bin/<binary>
#         $DIR/cargo-target/<client>/         (cargo's own cache: a rebuild is incremental)
#         $DIR/logs/<client>.log              (cargo output of the last build)
# Crates come from crates.io at the versions in Cargo.lock (--locked).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$here/../.." && pwd)"
DIR="${MODELPACK_PEERS_DIR:-$HOME/.cache/modelpack-peers}"
command -v cargo >/dev/null 2>&1 || export PATH="$PATH:$HOME/.cargo/bin"
command -v cargo >/dev/null 2>&1 || { echo "build-rust-clients: cargo not found on PATH (install Rust)" >&2; exit 2; }
mkdir -p "$DIR/bin" "$DIR/logs"

if command -v flock >/dev/null 2>&1; then  # one build at a time per cache dir
  exec 9>"$DIR/.lock-rust"
  flock 9
fi

failed=0
for manifest in "$ROOT"/tests/clients/*/Cargo.toml; do
  [[ -f "$manifest" ]] || continue
  src="$(dirname "$manifest")"
  client="$(basename "$src")"
  binary="$(sed -n -E 's/^name = "(.*)"$/\1/p' "$manifest" | head -n 1)"
  hash="$(cd "$src" && find Cargo.toml Cargo.lock src -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)"
  dest="$DIR/$client-$hash"
  log="$DIR/logs/$client.log"
  if [[ -x "$dest/bin/$binary" && -f "$dest/.rust-client" ]]; then
    ln -sfn "../$client-$hash/bin/$binary" "$DIR/bin/$binary"
    printf '%-10s %-12s cached\n' "$client" "$hash"
    continue
  fi
  start=$SECONDS
  set +e
  CARGO_TARGET_DIR="$DIR/cargo-target/$client" nice -n 10 timeout 1800 \
    cargo build --release --locked --manifest-path "$manifest" >"$log" 2>&1
  rc=$?
  set -e
  built="$DIR/cargo-target/$client/release/$binary"
  if [[ $rc -eq 0 && -x "$built" ]]; then
    for old in "$DIR/$client"-*/.rust-client; do  # earlier builds of this client only
      [[ -f "$old" ]] && rm -rf "$(dirname "$old")"
    done
    mkdir -p "$dest/bin"
    printf '%s\n' "$client" >"$dest/.rust-client"
    cp "$built" "$dest/bin/$binary"
    ln -sfn "../$client-$hash/bin/$binary" "$DIR/bin/$binary"
    printf '%-10s %-12s built in %d s\n' "$client" "$hash" "$((SECONDS - start))"
  else
    printf '%-10s %-12s FAILED (rc=%d) after %d s: %s  [log: %s]\n' "$client" "$hash" "$rc" \
      "$((SECONDS - start))" "$(tail -n 2 "$log" | tr -s ' \t\n' ' ' | cut -c1-300)" "$log"
    rm -f "$DIR/bin/$binary"
    failed=1
  fi
done
echo "bin dir: $DIR/bin"
exit "$failed"
