#!/usr/bin/env bash
# Build MatrixHub (matrixhub-ai/matrixhub, a private Hugging Face hub on git + MySQL) from the
# source snapshot in ../shared/peer-src (see its PROVENANCE.md) once into the peers cache;
# rebuilt only when the snapshot or this recipe changes. As its deploy/docker/matrixhub/Dockerfile
# builds it: `go build ./cmd/matrixhub` (its Go dependencies, matrixhub-ai/hfd and wzshiming/xet
# included, from the Go module proxy at the versions its go.mod pins), and the React UI with
# `pnpm install --frozen-lockfile && pnpm build` (pnpm at the version its package.json names,
# installed with npm from the npm registry), by default: the model-page row of
# tests/integration/test_matrixhub.py opens MatrixHub's UI in Chromium. MODELPACK_MATRIXHUB_UI=0
# builds the server alone (that test then fails, saying so). A UI that fails to build is said on
# the line and the server is kept without it (the API, the hub API and git do not need it), with
# the reason in share/UI-FAILED, which the model-page test fails with; such a build is not
# cached: the next run builds the UI again.
#
# Two changes to MatrixHub's source: its API server listens on every interface (":PORT", and its
# grpc-gateway dials ":PORT"); a test peer listens on 127.0.0.1 only. And its UI's lint tools
# (eslint and its plugins, husky, lint-staged: devDependencies `pnpm build` does not run) are
# left out: the npm registry reachable here answers 404 for one they pin
# (@eslint-react/eslint-plugin 2.8.0), so `pnpm install --frozen-lockfile` fails. pnpm then only
# prunes the lock (checked: no package gets a version the lock does not pin).
#
#   scripts/peers/build-matrixhub.sh                 # build if missing
#   MODELPACK_PEERS_CHECK=1 ...                      # only say cached / to build
#   MODELPACK_MATRIXHUB_UI=0 ...                     # the server alone, without its React UI
#   MODELPACK_PEER_SRC=/path/to/peer-src ...         # default: <checkout>/../shared/peer-src
#
# Layout: $DIR/matrixhub-<hash>/bin/matrixhub
#         $DIR/matrixhub-<hash>/share/migrations/sql/mysql/*.sql   (it runs them at start)
#         $DIR/matrixhub-<hash>/share/ui/index.html ...            (when the UI built)
#         $DIR/matrixhub-<hash>/share/UI-FAILED                    (when it did not: why)
#         $DIR/matrixhub-<hash>/share/VERSION, .pin
#         $DIR/matrixhub -> matrixhub-<hash>       (what python -m modelpack.testing.matrixhub opens)
#         $DIR/pnpm-<version>/, $DIR/pnpm-store/   (pnpm, and its store of the UI's packages)
#         $DIR/npm-cache/                          (npm's cache)
#         $DIR/logs/matrixhub.log                  (the last attempt's output)
# Exit status: non-zero when the server failed to build. Measured on two busy cores at nice 19
# from nothing (empty Go module and build caches, npm cache and pnpm store): 304 s, the server
# 202 s (every module download included) and the UI 102 s; cached: 0.1 s. The UI from nothing
# again (its build output, npm cache, pnpm and pnpm store removed; Go's caches warm, so the
# server took 3 s), 2026-12-07, twice at load 2 and 4: the script 50 s and 66 s, the UI 46 s and
# 63 s of it (pnpm install 7 s and 13 s, `pnpm build` 37 s and 48 s).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
checkout="$(cd "$here/../.." && pwd)"
DIR="${MODELPACK_PEERS_DIR:-$HOME/.cache/modelpack-peers}"
SRC="${MODELPACK_PEER_SRC:-$checkout/../shared/peer-src}"
VERSION=v0.2.0-rc.3
ARCHIVE="matrixhub-$VERSION.tar.gz"
UI="${MODELPACK_MATRIXHUB_UI:-1}"

command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"
command -v go >/dev/null 2>&1 || { echo "build-matrixhub: go not found on PATH (install Go 1.25+)" >&2; exit 2; }
if [[ ! -d "$SRC" ]]; then  # a clone on its own: the MatrixHub tests skip, saying so
  printf '%-9s %-12s not built: %s is absent (the MatrixHub tests are skipped)\n' matrixhub - "$SRC"
  exit 0
fi
if [[ ! -f "$SRC/$ARCHIVE" ]]; then
  printf '%-9s %-12s FAILED: no %s in %s\n' matrixhub "$VERSION" "$ARCHIVE" "$SRC"
  exit 1
fi

# 12 hex digits of what the build depends on: the snapshot, this script, Go and Node.
hash="$({ sha256sum "$SRC/$ARCHIVE" "${BASH_SOURCE[0]}" | cut -d' ' -f1
          echo "ui=$UI $(go env GOVERSION) node=$(node --version 2>/dev/null || echo none)"; } |
        sha256sum | cut -c1-12)"
dest="$DIR/matrixhub-$hash"
pin="$ARCHIVE $hash"

# A build whose UI failed is kept (the server serves the hub API without it) but is not cached:
# the next run builds the UI again.
is_cached() {
  [[ -x "$dest/bin/matrixhub" && -f "$dest/.pin" && "$(cat "$dest/.pin")" == "$pin" ]] &&
    { [[ "$UI" != 1 ]] || [[ -f "$dest/share/ui/index.html" ]]; }
}

if [[ -n "${MODELPACK_PEERS_CHECK:-}" ]]; then
  is_cached && s=cached || s="to build"
  printf '%-9s %-12s %s\n' matrixhub "$VERSION" "$s"
  exit 0
fi

# One run at a time per cache dir (a test fixture waits for a running build here).
mkdir -p "$DIR/logs"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$DIR/.lock-matrixhub"
  flock 9
fi
if is_cached; then
  ln -sfn "matrixhub-$hash" "$DIR/matrixhub"
  printf '%-9s %-12s cached\n' matrixhub "$VERSION"
  exit 0
fi
export GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0

reason_from_log() {  # the last meaningful lines of a failed build, on one line
  grep -v -E '^\s*$|^go: downloading ' "$1" | tail -n 2 | tr -s ' \t\n' ' ' | cut -c1-300
}

commit="$(grep -F "| $ARCHIVE |" "$SRC/PROVENANCE.md" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $4); print $4}')"
[[ "$commit" =~ ^[0-9a-f]{40}$ ]] || commit=unknown

build_server() {  # top out log -> 0 when bin/matrixhub is built
  local top="$1" out="$2"
  (
    cd "$top"
    f=internal/apiserver/apiserver.go
    sed -i 's/addr := fmt.Sprintf(":%d", server.port)/addr := fmt.Sprintf("127.0.0.1:%d", server.port)/' "$f"
    sed -i 's/GRPCAddr: *fmt.Sprintf(":%d", server.port)/GRPCAddr: fmt.Sprintf("127.0.0.1:%d", server.port)/' "$f"
    [[ "$(grep -c '"127.0.0.1:%d", server.port' "$f")" == 2 ]] || { echo "listen-address patch did not apply"; exit 1; }
    echo "== go build ./cmd/matrixhub ($VERSION, commit $commit)"
    nice -n 19 timeout 3600 go build -trimpath -ldflags "-s -w" -o "$out/bin/matrixhub" ./cmd/matrixhub
  )
}

build_ui() {  # top out -> 0 when share/ui/index.html is built
  local top="$1" out="$2" want pnpm
  command -v npm >/dev/null 2>&1 || { echo "no npm (Node.js) on PATH"; return 1; }
  want="$(cd "$top/ui" && node -p 'require("./package.json").packageManager')"   # pnpm@10.17.0
  [[ "$want" =~ ^pnpm@[0-9.]+$ ]] || { echo "package.json names no pnpm version: $want"; return 1; }
  # pnpm with npm itself, not corepack: the corepack Node 20 ships checks npm's signing keys of
  # its own release and refuses today's ("No compatible signature found in package metadata").
  pnpm="$DIR/${want/@/-}/node_modules/.bin/pnpm"
  if [[ ! -x "$pnpm" ]]; then
    echo "== npm install $want"
    nice -n 19 timeout 600 npm install --prefix "$DIR/${want/@/-}" --no-audit --no-fund \
      --cache "$DIR/npm-cache" "$want" || return 1
  fi
  (
    cd "$top/ui"
    export CI=true
    # The lint tools go (see the top of this file): the UI's build does not run them.
    cp pnpm-lock.yaml "$out/pinned-lock.yaml"
    node -e '
      const fs = require("fs"), p = JSON.parse(fs.readFileSync("package.json"));
      for (const name of Object.keys(p.devDependencies))
        if (/eslint|^globals$|^husky$|^lint-staged$/.test(name)) delete p.devDependencies[name];
      delete p.scripts.prepare;
      fs.writeFileSync("package.json", JSON.stringify(p, null, 2) + "\n");'
    rm -f eslint.config.js lint-staged.config.js
    echo "== pnpm install (the lock less the lint tools)"
    start=$SECONDS
    nice -n 19 timeout 1800 "$pnpm" install --no-frozen-lockfile --ignore-scripts \
      --store-dir "$DIR/pnpm-store" || exit 1
    # Only pruned: every package still installed is at the version MatrixHub's lock pins.
    node -e '
      const fs = require("fs");
      const keys = f => new Set((fs.readFileSync(f, "utf8").split("\nsnapshots:")[0]
        .split("\npackages:")[1] || "").match(/^  \S.*:$/gm));
      const pinned = keys(process.argv[1]), added = [...keys("pnpm-lock.yaml")].filter(k => !pinned.has(k));
      if (added.length) { console.log("not in MatrixHub'"'"'s lock:", added.join(" ")); process.exit(1); }' \
      "$out/pinned-lock.yaml" || exit 1
    rm "$out/pinned-lock.yaml"
    echo "== pnpm install took $((SECONDS - start)) s; pnpm build"
    start=$SECONDS
    NODE_OPTIONS=--max-old-space-size=2048 nice -n 19 timeout 1800 "$pnpm" build || exit 1
    echo "== pnpm build took $((SECONDS - start)) s"
  ) || return 1
  [[ -f "$top/ui/dist/index.html" ]] || { echo "pnpm build wrote no dist/index.html"; return 1; }
  cp -r "$top/ui/dist" "$out/share/ui"
}

start=$SECONDS
log="$DIR/logs/matrixhub.log"
: >"$log"
work="$(mktemp -d "$DIR/.build-matrixhub.XXXXXX")"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
tar -xzf "$SRC/$ARCHIVE" -C "$work"
top="$work/${ARCHIVE%.tar.gz}"
out="$work/out"
mkdir -p "$out/bin" "$out/share"
if ! build_server "$top" "$out" >>"$log" 2>&1; then
  printf '%-9s %-12s FAILED after %d s: %s  [log: %s]\n' matrixhub "$VERSION" "$((SECONDS - start))" \
    "$(reason_from_log "$log")" "$log"
  rm -f "$DIR/matrixhub"   # never leave a stale build for the launcher
  exit 1
fi
cp -r "$top/db/migrations" "$out/share/migrations"
printf '%s\n' "$VERSION" >"$out/share/VERSION"
printf '%s\n' "$commit" >"$out/share/COMMIT"
server_s=$((SECONDS - start))
note="server $server_s s"
if [[ "$UI" != 1 ]]; then
  note="$note, no UI (MODELPACK_MATRIXHUB_UI=0)"
elif ui_start=$SECONDS && ui_from=$(($(wc -l <"$log") + 1)) && build_ui "$top" "$out" >>"$log" 2>&1; then
  note="$note, UI $((SECONDS - ui_start)) s"
else
  reason="$(reason_from_log <(tail -n +"$ui_from" "$log"))"  # from the UI's part of the log
  # What the model-page test reports when it finds no UI; the next run builds the UI again.
  printf 'UI FAILED: %s [log: %s]\n' "$reason" "$log" >"$out/share/UI-FAILED"
  note="$note, UI FAILED ($reason): served without it, built again on the next run"
fi
rm -rf "$dest"
mv "$out" "$dest"
printf '%s\n' "$pin" >"$dest/.pin"
ln -sfn "matrixhub-$hash" "$DIR/matrixhub"
printf '%-9s %-12s built in %d s (%s)\n' matrixhub "$VERSION" "$((SECONDS - start))" "$note"
