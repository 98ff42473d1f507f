#!/usr/bin/env bash
# Build Harbor's core, jobservice and registryctl from the source snapshots in
# ../shared/peer-src (see its PROVENANCE.md) once into the peers cache; rebuild a
# version only when its snapshot (or the pinniped snapshot, or this recipe) changes.
# Harbor's Go module is not on the Go module proxy (403); its dependencies are.
#
#   scripts/peers/build-harbor.sh                    # build what is missing
#   MODELPACK_HARBOR_VERSIONS="v2.15.2" ...          # only these (default: v2.15.2 main)
#   MODELPACK_PEERS_CHECK=1 ...                      # only say cached / to build
#   MODELPACK_PEER_SRC=/path/to/peer-src ...         # default: <checkout>/../shared/peer-src
#
# Layout: $DIR/harbor-<version>-<hash>/bin/{harbor_core,harbor_jobservice,harbor_registryctl}
#         $DIR/harbor-<version>-<hash>/share/migrations/postgresql/*.sql  (core runs them)
#         $DIR/harbor-<version>-<hash>/.pin       (what it was built from)
#         $DIR/harbor-<version> -> harbor-<version>-<hash>   (what the launcher opens)
#         $DIR/swagger-v0.33.1/bin/swagger        (go-swagger, the version Harbor's Makefile pins)
#         $DIR/logs/harbor-<version>.log          (the last attempt's output)
# Exit status: non-zero when a version failed. From nothing on two busy cores: v2.15.2 about
# 10 minutes (go-swagger and module downloads included), then main 5 (sharing Go's caches);
# cached: 0.1 s.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
checkout="$(cd "$here/../.." && pwd)"
DIR="${MODELPACK_PEERS_DIR:-$HOME/.cache/modelpack-peers}"
SRC="${MODELPACK_PEER_SRC:-$checkout/../shared/peer-src}"
VERSIONS="${MODELPACK_HARBOR_VERSIONS:-v2.15.2 main}"
SWAGGER_VERSION=v0.33.1
PINNIPED=pinniped-v0.37.0-pkce.tar.gz
# Bumped by hand when the recipe below changes in a way that changes the binaries.
RECIPE=2

command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"
command -v go >/dev/null 2>&1 || { echo "build-harbor: go not found on PATH (install Go 1.26)" >&2; exit 2; }
if [[ ! -d "$SRC" ]]; then  # a clone on its own: the Harbor tests skip, saying so
  printf '%-8s %-9s not built: %s is absent (the Harbor tests are skipped)\n' harbor - "$SRC"
  exit 0
fi
mkdir -p "$DIR/logs"

archive_of() {  # version -> the snapshot archive's file name
  case "$1" in
    main) (cd "$SRC" && ls harbor-main-*.tar.gz 2>/dev/null | head -n 1) ;;
    *) echo "harbor-$1.tar.gz" ;;
  esac
}

hash_of() {  # archive -> 12 hex digits of what the build depends on
  { sha256sum "$SRC/$1" "$SRC/$PINNIPED" | cut -d' ' -f1; echo "recipe=$RECIPE swagger=$SWAGGER_VERSION $(go env GOVERSION)"; } |
    sha256sum | cut -c1-12
}

commit_of() {  # archive -> the upstream commit PROVENANCE.md names, 8 digits
  local c
  c="$(grep -F "| $1 |" "$SRC/PROVENANCE.md" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $4); print $4}')"
  [[ "$c" =~ ^[0-9a-f]{40}$ ]] && echo "${c:0:8}" || echo unknown
}

is_cached() {  # dest pin -> 0 when built from that pin
  [[ -x "$1/bin/harbor_core" && -x "$1/bin/harbor_jobservice" && -x "$1/bin/harbor_registryctl" &&
    -f "$1/.pin" && "$(cat "$1/.pin")" == "$2" ]]
}

if [[ -n "${MODELPACK_PEERS_CHECK:-}" ]]; then
  for v in $VERSIONS; do
    a="$(archive_of "$v")"
    [[ -f "$SRC/$a" ]] || { printf '%-8s %-9s no snapshot in %s\n' harbor "$v" "$SRC"; continue; }
    h="$(hash_of "$a")"
    is_cached "$DIR/harbor-$v-$h" "$a $h" && s=cached || s="to build"
    printf '%-8s %-9s %s\n' harbor "$v" "$s"
  done
  exit 0
fi

# One run at a time per cache dir (a second run, e.g. a test fixture, waits for the first).
# Its own lock, so it runs beside build-peers.sh (which holds $DIR/.lock).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$DIR/.lock-harbor"
  flock 9
fi
export GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0

reason_from_log() {  # the last meaningful lines of a failed build, on one line
  grep -v -E '^\s*$|^go: downloading ' "$1" | tail -n 2 | tr -s ' \t\n' ' ' | cut -c1-300
}

swagger="$DIR/swagger-$SWAGGER_VERSION/bin/swagger"
ensure_swagger() {  # log -> 0 when go-swagger is there (its own line when built)
  [[ -x "$swagger" ]] && return 0
  local tmp start=$SECONDS
  tmp="$(mktemp -d "$DIR/.build-swagger.XXXXXX")"
  (cd "$tmp" && GOBIN="$tmp/bin" nice -n 19 timeout 1800 \
    go install "github.com/go-swagger/go-swagger/cmd/swagger@$SWAGGER_VERSION") >>"$1" 2>&1 || { rm -rf "$tmp"; return 1; }
  mkdir -p "$(dirname "$swagger")"
  mv "$tmp/bin/swagger" "$swagger"
  rm -rf "$tmp"
  printf '%-8s %-9s built in %d s\n' swagger "$SWAGGER_VERSION" "$((SECONDS - start))"
}

build_one() {  # version archive hash commit log work dest -> 0 when built into dest
  local v="$1" a="$2" commit="$4" log="$5" work="$6" dest="$7" top release
  ensure_swagger "$log" || return 1
  tar -xzf "$SRC/$a" -C "$work"
  tar -xzf "$SRC/$PINNIPED" -C "$work"
  top="$work/${a%.tar.gz}"
  release="$(tr -d ' \n' <"$top/VERSION")"
  (
    cd "$top"
    rm -rf src/server/v2.0/models src/server/v2.0/restapi
    mkdir -p src/server/v2.0
    echo "== swagger generate server"
    nice -n 19 "$swagger" generate server --quiet --template-dir=tools/swagger/templates --exclude-main \
      --additional-initialism=CVE --additional-initialism=GC --additional-initialism=OIDC \
      -f api/v2.0/swagger.yaml -A harbor --target src/server/v2.0
    cd src
    # The one change to Harbor's source: jobservice and registryctl listen on every
    # interface (":PORT"); a test peer listens on 127.0.0.1 only (core reads httpaddr).
    sed -i 's/Addr: *fmt.Sprintf(":%d", cfg.Port)/Addr: fmt.Sprintf("127.0.0.1:%d", cfg.Port)/' jobservice/api/server.go
    sed -i 's/Addr: *":" + s.ServerConf.Port/Addr: "127.0.0.1:" + s.ServerConf.Port/' registryctl/main.go
    grep -q '"127.0.0.1:%d", cfg.Port' jobservice/api/server.go &&
      grep -q '"127.0.0.1:" + s.ServerConf.Port' registryctl/main.go ||
      { echo "listen-address patch did not apply"; exit 1; }
    go mod edit -replace "go.pinniped.dev=$work/pinniped-v0.37.0"
    echo "== go build core jobservice registryctl (release $release, commit $commit)"
    mkdir -p "$work/bin"
    nice -n 19 timeout 3600 go build -trimpath -o "$work/bin/" \
      -ldflags "-s -w -X github.com/goharbor/harbor/src/pkg/version.GitCommit=$commit -X github.com/goharbor/harbor/src/pkg/version.ReleaseVersion=$release" \
      ./core ./jobservice ./registryctl
  ) >>"$log" 2>&1 || return 1
  [[ -x "$work/bin/core" && -x "$work/bin/jobservice" && -x "$work/bin/registryctl" ]] || {
    echo "go build produced no binaries" >>"$log"; return 1; }
  rm -rf "$dest"
  mkdir -p "$dest/bin" "$dest/share"
  mv "$work/bin/core" "$dest/bin/harbor_core"
  mv "$work/bin/jobservice" "$dest/bin/harbor_jobservice"
  mv "$work/bin/registryctl" "$dest/bin/harbor_registryctl"
  cp -r "$top/make/migrations" "$dest/share/migrations"
  printf '%s\n' "$release" >"$dest/share/VERSION"
  printf '%s\n' "$commit" >"$dest/share/COMMIT"
}

failed=0
for v in $VERSIONS; do
  a="$(archive_of "$v")"
  if [[ -z "$a" || ! -f "$SRC/$a" ]]; then
    printf '%-8s %-9s FAILED: no snapshot for %s in %s\n' harbor "$v" "$v" "$SRC"; failed=1; continue
  fi
  h="$(hash_of "$a")"
  pin="$a $h"
  dest="$DIR/harbor-$v-$h"
  log="$DIR/logs/harbor-$v.log"
  if is_cached "$dest" "$pin"; then
    ln -sfn "harbor-$v-$h" "$DIR/harbor-$v"
    printf '%-8s %-9s cached\n' harbor "$v"
    continue
  fi
  start=$SECONDS
  : >"$log"
  work="$(mktemp -d "$DIR/.build-harbor-$v.XXXXXX")"
  if build_one "$v" "$a" "$h" "$(commit_of "$a")" "$log" "$work" "$dest"; then
    printf '%s\n' "$pin" >"$dest/.pin"
    ln -sfn "harbor-$v-$h" "$DIR/harbor-$v"
    printf '%-8s %-9s built in %d s\n' harbor "$v" "$((SECONDS - start))"
  else
    printf '%-8s %-9s FAILED after %d s: %s  [log: %s]\n' harbor "$v" "$((SECONDS - start))" \
      "$(reason_from_log "$log")" "$log"
    rm -f "$DIR/harbor-$v"   # never leave a stale version for the launcher
    failed=1
  fi
  chmod -R u+w "$work" 2>/dev/null || true
  rm -rf "$work"
done
exit "$failed"
