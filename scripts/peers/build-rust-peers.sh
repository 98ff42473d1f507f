#!/usr/bin/env bash
# Build every Rust peer the tests run into the peers cache, from one workspace
# (tests/clients/Cargo.toml) with one lock and one target directory, in two cargo invocations
# (phases) so a test that needs only the first need not wait for the second; rebuild a phase
# only when the workspace or a pin changes:
#   phase 1, rust-peers      dfdaemon (Dragonfly's peer and seed peer, crate dragonfly-client),
#                            hf-hub-fetch and dragonfly-hf-fetch (tests/clients/, against the gateway)
#   phase 2, rust-llm-peers  llmman (crate llmman), modelexpress-server (memory backend) and
#                            modelexpress-cli (crates modelexpress-server, modelexpress-client)
# The crates the two phases share compile once: peers-deps, selected in both, asks each of them
# for the union of the features the two phases need (tests/clients/peers-deps/Cargo.toml).
#
#   scripts/peers/build-rust-peers.sh      # both phases: build what is missing, print the bin dir
#   scripts/peers/build-rust-peers.sh 1    # phase 1 only (what the Dragonfly and hub-client tests run)
#   scripts/peers/build-rust-peers.sh 2    # phase 2 only (the llmman and ModelExpress tests)
#   MODELPACK_PEERS_DIR=/x scripts/peers/build-rust-peers.sh
#   MODELPACK_PEERS_CHECK=1 ...            # only say whether each phase is cached
#   MODELPACK_RUST_UNIFY=1 ...             # regenerate tests/clients/peers-deps/Cargo.toml
#
# Layout: $DIR/rust-<hash>/bin/<binary>       phase 1 (<hash>: of the workspace files and the pins)
#         $DIR/llm-peers-<hash>/bin/<binary>  phase 2 (not rust-*: an older copy of this script
#                                             removes every rust-*/ it did not build)
#         $DIR/bin/<binary> -> ../<that dir>/bin/<binary>
#         $DIR/rust-ws/                       (the workspace, with the crates unpacked in vendor/;
#                                             older copies of this script assemble theirs in rust-src/)
#         $DIR/cargo-target/rust-peers/       (cargo's cache, both phases: a rebuild is incremental;
#                                             cargo-timings/ holds each build's --timings report)
#         $DIR/logs/rust-peers.log, rust-llm-peers.log   (cargo output of each phase's last build)
# Locks: phase 2 holds .lock-rust-llm for its whole run, phase 1 .lock-rust: a second run
# asking for phase 1 waits only for phase 1. Cargo holds .lock-rust-src shared while it reads
# the workspace; assembling another content takes it exclusive, so a checkout with other pins
# waits instead of pulling the workspace from under a build. Crates come from crates.io at the
# versions in tests/clients/Cargo.lock (--locked).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$here/../.." && pwd)"
WORKSPACE="$ROOT/tests/clients"
PINS="$here/rust-pins.txt"
DIR="${MODELPACK_PEERS_DIR:-$HOME/.cache/modelpack-peers}"
OURS=(Cargo.toml Cargo.lock hf-hub-rs dragonfly-hf peers-deps)  # the workspace's files in the repo
# What each phase builds. `--no-default-features` reaches every selected package, so phase 2
# names llmman's defaults again and drops only ModelExpress's `gcs` (Google Cloud Storage).
PHASE1=(-p dragonfly-client -p hf-hub-fetch -p dragonfly-hf-fetch -p peers-deps
  --bin dfdaemon --bin hf-hub-fetch --bin dragonfly-hf-fetch)
PHASE2=(-p llmman -p modelexpress-server -p modelexpress-client -p peers-deps
  --bin llmman --bin modelexpress-server --bin modelexpress-cli --no-default-features
  --features llmman/default,modelexpress-server/memory-backend,modelexpress-server/tls-rustls,modelexpress-client/tls-rustls)
# llmman's build.rs compiles its go-shim/ with `go`; its go.mod asks for Go 1.27.3, which the
# module proxy serves as a toolchain. Only this build sees the setting.
GO_TOOLCHAIN=go1.27.3
command -v cargo >/dev/null 2>&1 || export PATH="$PATH:$HOME/.cargo/bin"
command -v cargo >/dev/null 2>&1 || { echo "build-rust-peers: cargo not found on PATH (install Rust)" >&2; exit 2; }
mkdir -p "$DIR/bin" "$DIR/logs"
why=""
phases=("${@:-1 2}")
read -r -a phases <<<"${phases[*]}"

files_hash() {  # sha256 (12 hex) of the named workspace files, the pins and the arguments
  (cd "$WORKSPACE" && find "$@" -type f -not -path '*/target/*' | LC_ALL=C sort | xargs sha256sum
   sha256sum <"$PINS")
}
hash1="$( (files_hash "${OURS[@]}"; echo "${PHASE1[*]}") | sha256sum | cut -c1-12)"
hash2="$( (files_hash Cargo.toml Cargo.lock peers-deps; echo "${PHASE2[*]}" "$GO_TOOLCHAIN") \
  | sha256sum | cut -c1-12)"
src="$DIR/rust-ws"
target="$DIR/cargo-target/rust-peers"

# The workspace, with each pinned crate unpacked from crates.io (checked against its sha256),
# assembled once per content (.assembled holds its hash). Returns holding .lock-rust-src shared
# on fd 8 (release it with `exec 8>&-` when cargo is done); on failure, the reason in $why.
assemble() {  # assemble LOG
  local log=$1 content
  content="$( (files_hash "${OURS[@]}") | sha256sum | cut -c1-12)"
  exec 8>"$DIR/.lock-rust-src"
  flock 8
  if [[ "$(cat "$src/.assembled" 2>/dev/null)" == "$content" ]]; then
    flock -s 8
    return 0
  fi
  why=""
  assemble_into "$log" || { exec 8>&-; return 1; }
  echo "$content" >"$src/.assembled"
  flock -s 8
}
assemble_into() {
  local log=$1
  rm -rf "$src"
  mkdir -p "$src/vendor"
  (cd "$WORKSPACE" && tar cf - --exclude=target "${OURS[@]}") | tar xf - -C "$src" 2>>"$log" \
    || { why="cannot copy the workspace from $WORKSPACE"; return 1; }
  local crate version sha256 archive
  while read -r crate version sha256 || [[ -n "${crate:-}" ]]; do
    [[ -z "${crate:-}" || "$crate" == \#* ]] && continue
    archive="$DIR/logs/$crate-$version.crate"
    if ! curl -sSfL --retry 3 -o "$archive" \
        "https://static.crates.io/crates/$crate/$crate-$version.crate" >>"$log" 2>&1; then
      why="download of $crate $version from crates.io failed"; return 1
    fi
    echo "$sha256  $archive" | sha256sum -c --quiet - >>"$log" 2>&1 \
      || { why="$crate $version: sha256 differs from rust-pins.txt"; return 1; }
    { tar xzf "$archive" -C "$src/vendor" 2>>"$log" && mv "$src/vendor/$crate-$version" "$src/vendor/$crate"; } \
      || { why="cannot unpack $archive"; return 1; }
    rm -f "$src/vendor/$crate/Cargo.lock"  # the workspace's lock governs
  done <"$PINS"
}

if [[ -n "${MODELPACK_RUST_UNIFY:-}" ]]; then  # regenerate peers-deps from both phases' unit graphs
  log="$DIR/logs/rust-unify.log"
  : >"$log"
  assemble "$log" || { echo "build-rust-peers: $why [log: $log]" >&2; exit 1; }
  flock 8  # exclusive again: rust-unify.py rewrites the workspace's peers-deps
  exec python3 "$here/rust-unify.py" "$src" "$WORKSPACE/peers-deps/Cargo.toml" \
    --phase "${PHASE1[*]}" --phase "${PHASE2[*]}"
fi

# phase NAME HASH DIRPREFIX LOCK ARGS... : build one phase (or say it is cached); LOCK is a
# file to hold while it runs, or "" when the caller holds it already
phase() {
  local name=$1 hash=$2 prefix=$3 lock=$4
  shift 4
  local args=("$@") dest="$DIR/$prefix$hash" log="$DIR/logs/$name.log" start=$SECONDS binaries=()
  local i
  for ((i = 0; i < ${#args[@]}; i++)); do
    [[ "${args[i]}" == --bin ]] && binaries+=("${args[i + 1]}")
  done
  if [[ -n "${MODELPACK_PEERS_CHECK:-}" ]]; then  # only say whether it would build
    printf '%-18s %-12s %s\n' "$name" "$hash" "$([[ -f "$dest/.built" ]] && echo cached || echo 'to build')"
    return 0
  fi
  if [[ -n "$lock" ]]; then  # one build of a phase at a time per cache dir; a second run waits
    exec 9>"$DIR/$lock"
    flock 9
  fi
  link() {
    for binary in "${binaries[@]}"; do ln -sfn "../$prefix$hash/bin/$binary" "$DIR/bin/$binary"; done
  }
  if [[ -f "$dest/.built" ]]; then
    link
    printf '%-18s %-12s cached\n' "$name" "$hash"
    [[ -z "$lock" ]] || exec 9>&-
    return 0
  fi
  : >"$log"
  fail() {
    printf '%-18s %-12s FAILED after %d s: %s  [log: %s]\n' "$name" "$hash" \
      "$((SECONDS - start))" "$1" "$log"
    for binary in "${binaries[@]}"; do rm -f "$DIR/bin/$binary"; done
    exit 1
  }
  assemble "$log" || fail "$why"
  if ! GOTOOLCHAIN="$GO_TOOLCHAIN" CARGO_TARGET_DIR="$target" nice -n 10 timeout 10800 \
      cargo build --release --locked --timings --manifest-path "$src/Cargo.toml" "${args[@]}" >>"$log" 2>&1; then
    fail "$(grep -E '^error' "$log" | head -n 2 | tr -s ' \t\n' ' ' | cut -c1-300)"
  fi
  exec 8>&-  # the workspace may be reassembled now
  local old
  for old in "$DIR/$prefix"[0-9a-f]*/.built; do  # earlier builds of this phase only
    [[ -f "$old" ]] && rm -rf "$(dirname "$old")"
  done
  mkdir -p "$dest/bin"
  for binary in "${binaries[@]}"; do cp "$target/release/$binary" "$dest/bin/$binary"; done
  touch "$dest/.built"
  link
  printf '%-18s %-12s built in %d s (%s)\n' "$name" "$hash" "$((SECONDS - start))" "${binaries[*]}"
  [[ -z "$lock" ]] || exec 9>&-
}

# Phase 2's lock first and for its whole run, phase 1's inside it: whoever waits for phase 1
# alone is let go as soon as phase 1 is built.
want2=""
for p in "${phases[@]}"; do
  case "$p" in
    1) ;;
    2) want2=1 ;;
    *) echo "build-rust-peers: unknown phase '$p' (1 or 2)" >&2; exit 2 ;;
  esac
done
if [[ -n "$want2" && -z "${MODELPACK_PEERS_CHECK:-}" ]]; then
  exec 7>"$DIR/.lock-rust-llm"
  flock 7
fi
for p in "${phases[@]}"; do
  case "$p" in
    1) phase rust-peers "$hash1" rust- .lock-rust "${PHASE1[@]}" ;;
    2) phase rust-llm-peers "$hash2" llm-peers- "" "${PHASE2[@]}" ;;  # fd 7 holds its lock
  esac
done
[[ -n "${MODELPACK_PEERS_CHECK:-}" ]] || echo "bin dir: $DIR/bin"
