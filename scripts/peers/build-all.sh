#!/usr/bin/env bash
# Build every peer the tests run, once, into the peers cache (MODELPACK_PEERS_DIR,
# default ~/.cache/modelpack-peers): one line per peer with its time, then the total.
# The Rust workspace (dfdaemon's RocksDB and aws-lc are most of a cold build; then llmman and
# ModelExpress, its second phase) and Harbor (core, jobservice, registryctl from
# ../shared/peer-src: the slowest Go build) start first and compile beside the Go tools, and so
# does MatrixHub (its server and React UI, from ../shared/peer-src too).
# Exit 1 when a required peer failed.
#   scripts/peers/build-all.sh           # build what is missing
#   MODELPACK_PEERS_CHECK=1 scripts/peers/build-all.sh   # only say what is cached
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
start=$SECONDS
if [[ -n "${MODELPACK_PEERS_CHECK:-}" ]]; then
  { bash "$here/build-peers.sh"; bash "$here/build-dragonfly.sh"; bash "$here/build-rust-peers.sh" 2; } \
    | grep --line-buffered -v '^export PATH\|^bin dir'
  bash "$here/build-harbor.sh"
  bash "$here/build-matrixhub.sh"
  exit 0
fi
bash "$here/build-rust-peers.sh" | grep --line-buffered -v '^bin dir' &  # both phases, one line each
rust=$!
# Harbor from ../shared/peer-src (without it, one line says so and the Harbor tests skip).
bash "$here/build-harbor.sh" &
harbor=$!
# MatrixHub from ../shared/peer-src likewise (its tests skip without it).
bash "$here/build-matrixhub.sh" &
matrixhub=$!
rc=0
bash "$here/build-peers.sh" | grep --line-buffered -v '^export PATH\|^bin dir' || rc=1
# Dragonfly's Go servers; its dfdaemon is the Rust build above (waited for on its lock).
bash "$here/build-dragonfly.sh" | grep --line-buffered -v '^bin dir\|^rust-peers' || rc=1
wait "$rust" || rc=1
wait "$harbor" || rc=1
wait "$matrixhub" || rc=1
printf 'peers: %s in %d s\n' "$([[ $rc == 0 ]] && echo 'all ready' || echo 'FAILED')" "$((SECONDS - start))"
exit "$rc"
