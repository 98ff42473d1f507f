#!/usr/bin/env bash
# Build Harbor's portal (the Angular web UI, src/portal of the snapshot in ../shared/peer-src)
# once into the peers cache, as Harbor's make/photon/portal/Dockerfile does (read in an older
# upstream version; the snapshot does not hold it): `npm install`
# (which runs the postinstall that generates the API client from api/v2.0/swagger.yaml), then
# `ng build --configuration production`. Rebuilt only when the snapshot or this recipe changes.
# Not part of `make test`: only `make harbor-screenshots` needs it (scripts/harbor_screenshots.py).
#
# One change to Harbor's package.json, because the npm registry does not serve what it pins:
# @clr/angular 18.0.0 (404; the registry has 18.2.0 and 18.2.2) and @clr/addons (no such
# package on the registry; the portal imports nothing from it). Clarity 18.2.0 (@clr/angular
# and @clr/ui, the newest pair the registry serves) goes in their place and @clr/addons goes.
#
#   scripts/peers/build-harbor-portal.sh             # build what is missing
#   MODELPACK_HARBOR_VERSIONS="v2.15.2" ...          # only these (default: v2.15.2)
#   MODELPACK_PEERS_CHECK=1 ...                      # only say cached / to build
#
# Layout: $DIR/harbor-portal-<version>-<hash>/html/   (what nginx serves: index.html, ...)
#         $DIR/harbor-portal-<version>-<hash>/.pin
#         $DIR/harbor-portal-<version> -> harbor-portal-<version>-<hash>
#         $DIR/npm-cache/                             (npm's cache, shared by versions)
#         $DIR/logs/harbor-portal-<version>.log
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
checkout="$(cd "$here/../.." && pwd)"
DIR="${MODELPACK_PEERS_DIR:-$HOME/.cache/modelpack-peers}"
SRC="${MODELPACK_PEER_SRC:-$checkout/../shared/peer-src}"
VERSIONS="${MODELPACK_HARBOR_VERSIONS:-v2.15.2}"
CLARITY=18.2.0
# Bumped by hand when the recipe below changes in a way that changes the output.
RECIPE=1

command -v npm >/dev/null 2>&1 || { echo "build-harbor-portal: npm not found (install Node.js 20.19+ or 22.12+)" >&2; exit 2; }
if [[ ! -d "$SRC" ]]; then
  printf '%-13s %-9s not built: %s is absent\n' harbor-portal - "$SRC"
  exit 0
fi
mkdir -p "$DIR/logs"

archive_of() {
  case "$1" in
    main) (cd "$SRC" && ls harbor-main-*.tar.gz 2>/dev/null | head -n 1) ;;
    *) echo "harbor-$1.tar.gz" ;;
  esac
}

hash_of() {
  { sha256sum "$SRC/$1" | cut -d' ' -f1; echo "recipe=$RECIPE clarity=$CLARITY node=$(node --version)"; } |
    sha256sum | cut -c1-12
}

is_cached() { [[ -f "$1/html/index.html" && -f "$1/.pin" && "$(cat "$1/.pin")" == "$2" ]]; }

if [[ -n "${MODELPACK_PEERS_CHECK:-}" ]]; then
  for v in $VERSIONS; do
    a="$(archive_of "$v")"
    h="$(hash_of "$a")"
    is_cached "$DIR/harbor-portal-$v-$h" "$a $h" && s=cached || s="to build"
    printf '%-13s %-9s %s\n' harbor-portal "$v" "$s"
  done
  exit 0
fi

if command -v flock >/dev/null 2>&1; then
  exec 9>"$DIR/.lock-harbor-portal"
  flock 9
fi

build_one() {  # archive log work dest
  local a="$1" log="$2" work="$3" dest="$4" top
  top="$work/${a%.tar.gz}"
  tar -xzf "$SRC/$a" -C "$work" "${a%.tar.gz}/src/portal" "${a%.tar.gz}/api" "${a%.tar.gz}/LICENSE"
  (
    cd "$top/src/portal"
    node -e '
      const fs = require("fs"), p = JSON.parse(fs.readFileSync("package.json"));
      delete p.dependencies["@clr/addons"];
      p.dependencies["@clr/angular"] = p.dependencies["@clr/ui"] = process.argv[1];
      fs.writeFileSync("package.json", JSON.stringify(p, null, 2) + "\n");' "$CLARITY"
    ! grep -rq '@clr/addons' src || { echo "the portal imports @clr/addons"; exit 1; }
    echo "== npm install"
    start=$SECONDS
    # Cypress (a devDependency for Harbor's UI tests) would download its binary from its own site.
    CYPRESS_INSTALL_BINARY=0 nice -n 19 timeout 1800 npm install --no-audit --no-fund --cache "$DIR/npm-cache"
    echo "== npm install took $((SECONDS - start)) s"
    npm run generate-build-timestamp
    echo "== ng build --configuration production"
    start=$SECONDS
    nice -n 19 timeout 3600 node --max_old_space_size=2048 node_modules/@angular/cli/bin/ng build --configuration production
    echo "== ng build took $((SECONDS - start)) s"
  ) >>"$log" 2>&1 || return 1
  local out="$top/src/portal/dist"
  [[ -f "$out/browser/index.html" ]] && out="$out/browser"
  [[ -f "$out/index.html" ]] || { echo "ng build wrote no index.html" >>"$log"; return 1; }
  rm -rf "$dest"
  mkdir -p "$dest"
  cp -r "$out" "$dest/html"
  cp "$top/LICENSE" "$dest/html/LICENSE"
}

failed=0
for v in $VERSIONS; do
  a="$(archive_of "$v")"
  if [[ -z "$a" || ! -f "$SRC/$a" ]]; then
    printf '%-13s %-9s FAILED: no snapshot\n' harbor-portal "$v"; failed=1; continue
  fi
  h="$(hash_of "$a")"
  dest="$DIR/harbor-portal-$v-$h"
  log="$DIR/logs/harbor-portal-$v.log"
  if is_cached "$dest" "$a $h"; then
    ln -sfn "harbor-portal-$v-$h" "$DIR/harbor-portal-$v"
    printf '%-13s %-9s cached\n' harbor-portal "$v"
    continue
  fi
  start=$SECONDS
  : >"$log"
  work="$(mktemp -d "$DIR/.build-harbor-portal-$v.XXXXXX")"
  if build_one "$a" "$log" "$work" "$dest"; then
    printf '%s\n' "$a $h" >"$dest/.pin"
    ln -sfn "harbor-portal-$v-$h" "$DIR/harbor-portal-$v"
    printf '%-13s %-9s built in %d s\n' harbor-portal "$v" "$((SECONDS - start))"
  else
    printf '%-13s %-9s FAILED after %d s: %s  [log: %s]\n' harbor-portal "$v" "$((SECONDS - start))" \
      "$(grep -v -E '^\s*$|^npm warn' "$log" | tail -n 2 | tr -s ' \t\n' ' ' | cut -c1-300)" "$log"
    rm -f "$DIR/harbor-portal-$v"
    failed=1
  fi
  rm -rf "$work"
done
exit "$failed"
