#!/usr/bin/env bash
# Build a Dragonfly cluster's programs once into the peers cache, for
# tests/integration/test_dragonfly.py; rebuild one only when its pin changes.
#
#   scripts/peers/build-dragonfly.sh      # build what is missing, print the bin dir
#
# - manager, scheduler: Go, d7y.io/dragonfly/v2 at the pins of dragonfly-pins.txt,
#   built by build-peers.sh ($DIR/df-manager-<v>/, $DIR/df-scheduler-<v>/).
# - dfdaemon (peer and seed peer): Rust, crate dragonfly-client at the pin in
#   rust-pins.txt, built with the other Rust peers by build-rust-peers.sh.
# Warm: well under a second.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${MODELPACK_PEERS_DIR:-$HOME/.cache/modelpack-peers}"
mkdir -p "$DIR/bin" "$DIR/logs"

# Two modules Dragonfly needs are on the module proxy but unknown to its checksum
# database (sum.golang.org answers 404 for machinery v1.10.14 and polardbx-connector-go
# v1.0.3-18); the hashes in dragonfly's own go.sum still verify them.
GONOSUMDB="${GONOSUMDB:+$GONOSUMDB,}github.com/dragonflyoss/machinery,github.com/polardb/polardbx-connector-go" \
  MODELPACK_PEERS_PINS="$here/dragonfly-pins.txt" bash "$here/build-peers.sh" | grep -v '^export PATH\|^bin dir'

# dfdaemon is built with the other Rust peers, in one cargo build (build-rust-peers.sh).
bash "$here/build-rust-peers.sh" 1 | grep -v '^bin dir'
[[ -n "${MODELPACK_PEERS_CHECK:-}" ]] || echo "bin dir: $DIR/bin"
