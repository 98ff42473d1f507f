#!/usr/bin/env bash
# `make test`: build the peers in the background while the tests that need none run; the
# tests that run a peer come last (tests/conftest.py orders them) and their fixtures wait for
# the build on its lock. Before the first test pytest prints which peers are cached and which
# are being built; at the end, one line per peer with its time and the total.
#   scripts/test.sh [PYTEST ARGS...]      (PY: the venv's python, default .venv/bin/python)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
DIR="${MODELPACK_PEERS_DIR:-$HOME/.cache/modelpack-peers}"
mkdir -p "$DIR/logs"
log="$DIR/logs/make-test-peers.log"
MODELPACK_PEERS_STATUS="$(MODELPACK_PEERS_CHECK=1 bash scripts/peers/build-all.sh 2>&1 | tr -s ' ')"
export MODELPACK_PEERS_STATUS MODELPACK_PEERS_LOG="$log"
setsid bash scripts/peers/build-all.sh >"$log" 2>&1 &
builder=$!
# Three workers on two cores: most tests wait on the servers and peers they start (a two-worker
# warm run kept the load average near 1.2). A module stays in one worker, each Harbor version's
# tests share one (tests/conftest.py schedules them).
"$PY" -m pytest -n "${MODELPACK_TEST_WORKERS:-3}" --no-loadscope-reorder "$@"
rc=$?
if kill -0 "$builder" 2>/dev/null; then  # pytest ended before needing the peers (-k, -x, ...)
  kill -- -"$builder" 2>/dev/null
  echo "peers: background build stopped (pytest ended first); log: $log"
elif ! wait "$builder"; then
  echo "peers: a build failed; log: $log"
  [[ $rc == 0 ]] && rc=1
fi
exit "$rc"
