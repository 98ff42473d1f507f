#!/usr/bin/env bash
# Build every Rust peer the tests run, once, in one `cargo build` of one workspace
# (tests/clients/Cargo.toml), into the peers cache; rebuild only when the workspace or a pin
# changes:
#   dfdaemon             Dragonfly's peer and seed peer (crate dragonfly-client, rust-pins.txt)
#   hf-hub-fetch         the hf-hub crate against the gateway (tests/clients/hf-hub-rs)
#   dragonfly-hf-fetch   Dragonfly's hf:// backend against the gateway (tests/clients/dragonfly-hf)
#
#   scripts/peers/build-rust-peers.sh      # build what is missing, print the bin dir
#   MODELPACK_PEERS_DIR=/x scripts/peers/build-rust-peers.sh
#   MODELPACK_PEERS_CHECK=1 ...            # only say whether it is cached
#
# Layout: $DIR/rust-<hash>/bin/<binary>    (<hash>: of the workspace files and the pins)
#         $DIR/bin/<binary> -> ../rust-<hash>/bin/<binary>
#         $DIR/rust-src/                   (the workspace, with the crate unpacked in vendor/)
#         $DIR/cargo-target/rust-peers/    (cargo's cache: a rebuild is incremental)
#         $DIR/logs/rust-peers.log         (cargo output of the last build)
# Crates come from crates.io at the versions in tests/clients/Cargo.lock (--locked).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$here/../.." && pwd)"
WORKSPACE="$ROOT/tests/clients"
PINS="$here/rust-pins.txt"
DIR="${MODELPACK_PEERS_DIR:-$HOME/.cache/modelpack-peers}"
BINARIES=(dfdaemon hf-hub-fetch dragonfly-hf-fetch)
command -v cargo >/dev/null 2>&1 || export PATH="$PATH:$HOME/.cargo/bin"
command -v cargo >/dev/null 2>&1 || { echo "build-rust-peers: cargo not found on PATH (install Rust)" >&2; exit 2; }
mkdir -p "$DIR/bin" "$DIR/logs"

hash="$( (cd "$WORKSPACE" && find Cargo.toml Cargo.lock hf-hub-rs dragonfly-hf -type f \
  -not -path '*/target/*' | LC_ALL=C sort | xargs sha256sum; sha256sum <"$PINS") \
  | sha256sum | cut -c1-12)"
dest="$DIR/rust-$hash"
link() {
  for binary in "${BINARIES[@]}"; do ln -sfn "../rust-$hash/bin/$binary" "$DIR/bin/$binary"; done
}
if [[ -n "${MODELPACK_PEERS_CHECK:-}" ]]; then  # only say whether it would build
  printf '%-18s %-12s %s\n' rust-peers "$hash" "$([[ -f "$dest/.built" ]] && echo cached || echo 'to build')"
  exit 0
fi
exec 9>"$DIR/.lock-rust"  # one build at a time per cache dir; a second run waits
flock 9
if [[ -f "$dest/.built" ]]; then
  link
  printf '%-18s %-12s cached\n' rust-peers "$hash"
  echo "bin dir: $DIR/bin"
  exit 0
fi

start=$SECONDS
log="$DIR/logs/rust-peers.log"
: >"$log"
fail() {
  printf '%-18s %-12s FAILED after %d s: %s  [log: %s]\n' rust-peers "$hash" \
    "$((SECONDS - start))" "$1" "$log"
  for binary in "${BINARIES[@]}"; do rm -f "$DIR/bin/$binary"; done
  exit 1
}

# The workspace, with each pinned crate unpacked from crates.io (checked against its sha256).
src="$DIR/rust-src"
rm -rf "$src"
mkdir -p "$src/vendor"
(cd "$WORKSPACE" && tar cf - --exclude=target Cargo.toml Cargo.lock hf-hub-rs dragonfly-hf) \
  | tar xf - -C "$src" 2>>"$log" || fail "cannot copy the workspace from $WORKSPACE"
while read -r crate version sha256 || [[ -n "${crate:-}" ]]; do
  [[ -z "${crate:-}" || "$crate" == \#* ]] && continue
  archive="$DIR/logs/$crate-$version.crate"
  if ! curl -sSfL --retry 3 -o "$archive" \
      "https://static.crates.io/crates/$crate/$crate-$version.crate" >>"$log" 2>&1; then
    fail "download of $crate $version from crates.io failed"
  fi
  echo "$sha256  $archive" | sha256sum -c --quiet - >>"$log" 2>&1 \
    || fail "$crate $version: sha256 differs from rust-pins.txt"
  tar xzf "$archive" -C "$src/vendor" 2>>"$log" && mv "$src/vendor/$crate-$version" "$src/vendor/$crate" \
    || fail "cannot unpack $archive"
  rm -f "$src/vendor/$crate/Cargo.lock"  # the workspace's lock governs
done <"$PINS"

args=(build --release --locked --manifest-path "$src/Cargo.toml")
for binary in "${BINARIES[@]}"; do args+=(--bin "$binary"); done
target="$DIR/cargo-target/rust-peers"
if ! CARGO_TARGET_DIR="$target" nice -n 10 timeout 5400 cargo "${args[@]}" >>"$log" 2>&1; then
  fail "$(grep -E '^error' "$log" | head -n 2 | tr -s ' \t\n' ' ' | cut -c1-300)"
fi
for old in "$DIR"/rust-*/.built; do  # earlier builds only
  [[ -f "$old" ]] && rm -rf "$(dirname "$old")"
done
mkdir -p "$dest/bin"
for binary in "${BINARIES[@]}"; do cp "$target/release/$binary" "$dest/bin/$binary"; done
touch "$dest/.built"
link
printf '%-18s %-12s built in %d s (%s)\n' rust-peers "$hash" "$((SECONDS - start))" "${BINARIES[*]}"
echo "bin dir: $DIR/bin"
