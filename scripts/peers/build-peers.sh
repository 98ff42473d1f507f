#!/usr/bin/env bash
# Build the pinned Go peer tools (oras, crane, cosign, modctl, kit, ...) once
# into a cache folder outside the repo; rebuild a tool only when its pin changes.
#
#   scripts/peers/build-peers.sh            # build what is missing, then print PATH line
#   MODELPACK_PEERS_DIR=/x scripts/peers/build-peers.sh
#   MODELPACK_PEERS_ONLY="oras crane" ...   # only these tools
#   MODELPACK_PEERS_SKIP="zot" ...          # skip these tools
#   MODELPACK_PEERS_CHECK=1 ...             # only say which are cached and which would build
#
# Layout: $DIR/<tool>-<version>/bin/<tool>  (+ .pin with the pin line it was built from)
#         $DIR/bin/<tool> -> ../<tool>-<version>/bin/<tool>
#         $DIR/logs/<tool>-<version>.log    (go install output of the last attempt)
# Exit status: non-zero only when a tool marked "required" in pins.txt fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$here/../.." && pwd)"
PINS="${MODELPACK_PEERS_PINS:-$here/pins.txt}"
DIR="${MODELPACK_PEERS_DIR:-$HOME/.cache/modelpack-peers}"
ONLY=" ${MODELPACK_PEERS_ONLY:-} "
SKIP=" ${MODELPACK_PEERS_SKIP:-} "

# Go's usual install places, for shells (CI) whose PATH lacks them.
command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"
command -v go >/dev/null 2>&1 || { echo "build-peers: go not found on PATH (install Go 1.26)" >&2; exit 2; }
[[ -r "$PINS" ]] || { echo "build-peers: cannot read $PINS" >&2; exit 2; }
mkdir -p "$DIR/bin" "$DIR/logs"

# One run at a time per cache dir (a second run waits for the first).
if [[ -z "${MODELPACK_PEERS_CHECK:-}" ]] && command -v flock >/dev/null 2>&1; then
  exec 9>"$DIR/.lock"
  flock 9
fi

# Build outside any go.mod / go.work so `go install pkg@version` is unaffected.
cd "$DIR"
export GOWORK=off GOFLAGS="${GOFLAGS:-}"

# The module proxy here serves some modules (modctl, kitops) by exact version
# but answers 403 to their version list, which `go install pkg@version` reads
# for its deprecation check, and then fails. So each tool's module is first
# downloaded by exact version, and a local file proxy placed first in GOPROXY
# serves that module's list (just the pinned version), .info and .mod; all
# other modules fall through (comma = on "not found") to the configured GOPROXY.
shim="$DIR/.goproxy"
upstream_proxy="$(go env GOPROXY)"
prepare_module() {  # module version log -> 0 when the module was downloaded
  local json info gomod esc
  json="$(nice -n 10 timeout 600 go mod download -json "$1@$2" 2>>"$3")" || { printf '%s\n' "$json" >>"$3"; return 1; }
  info="$(printf '%s\n' "$json" | sed -n -E 's/^\s*"Info": "(.*)",?$/\1/p')"
  gomod="$(printf '%s\n' "$json" | sed -n -E 's/^\s*"GoMod": "(.*)",?$/\1/p')"
  [[ -f "$info" && -f "$gomod" ]] || { printf '%s\n' "$json" >>"$3"; return 1; }
  esc="$(printf '%s' "$1" | sed -E 's/[A-Z]/!\L&/g')"
  rm -rf "${shim:?}/$esc"
  mkdir -p "$shim/$esc/@v"
  printf '%s\n' "$2" >"$shim/$esc/@v/list"
  cp "$info" "$shim/$esc/@v/$2.info"
  cp "$gomod" "$shim/$esc/@v/$2.mod"
}

failed_required=0

reason_from_log() {
  # Last meaningful lines of a failed build, squeezed onto one line.
  grep -v -E '^\s*$|^go: downloading ' "$1" | tail -n 2 | tr -s ' \t\n' ' ' | cut -c1-300
}

while read -r name pkg version need rest || [[ -n "${name:-}" ]]; do
  [[ -z "${name:-}" || "$name" == \#* ]] && continue
  if [[ -z "${pkg:-}" || -z "${version:-}" ]]; then
    echo "build-peers: bad line in $PINS: $name $pkg $version" >&2; exit 2
  fi
  need="${need:-required}"
  [[ "$ONLY" != "  " && "$ONLY" != *" $name "* ]] && continue
  if [[ "$SKIP" == *" $name "* ]]; then
    printf '%-8s %-9s skipped (MODELPACK_PEERS_SKIP)\n' "$name" "$version"; continue
  fi

  tags="" cgo=0 timeout_s=1800 ldflags="-s -w" toolchain=""
  mod="$(printf '%s' "$pkg" | sed -E 's#/cmd/[^/]+$##')"  # module root, unless mod= says otherwise
  for kv in ${rest:-}; do
    [[ "$kv" == \#* ]] && break
    case "$kv" in
      tags=*)    tags="${kv#tags=}" ;;
      mod=*)     mod="${kv#mod=}" ;;
      cgo=*)     cgo="${kv#cgo=}" ;;
      timeout=*) timeout_s="${kv#timeout=}" ;;
      toolchain=*) toolchain="${kv#toolchain=}" ;;
      xver=*)    ldflags+=" -X ${kv#xver=}=$version" ;;
      xsemver=*) ldflags+=" -X ${kv#xsemver=}=${version#v}" ;;
      *) echo "build-peers: unknown option '$kv' for $name" >&2; exit 2 ;;
    esac
  done

  pin="$name $pkg $version $tags cgo=$cgo $ldflags $toolchain"
  local_dir=""
  if [[ "$pkg" == ./* ]]; then  # a test program of this repository: its files are in the pin
    local_dir="$ROOT/${pkg#./}"
    pin+=" $(cd "$local_dir" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)"
  fi
  dest="$DIR/$name-$version"
  bin="$dest/bin/$name"
  log="$DIR/logs/$name-$version.log"

  cached=0
  [[ -x "$bin" && -f "$dest/.pin" && "$(cat "$dest/.pin")" == "$pin" ]] && cached=1
  if [[ -n "${MODELPACK_PEERS_CHECK:-}" ]]; then
    printf '%-8s %-9s %s\n' "$name" "$version" "$([[ $cached == 1 ]] && echo cached || echo 'to build')"
    continue
  fi
  if [[ $cached == 1 ]]; then
    ln -sfn "../$name-$version/bin/$name" "$DIR/bin/$name"
    printf '%-8s %-9s cached\n' "$name" "$version"
    continue
  fi

  tmp="$(mktemp -d "$DIR/.build-$name.XXXXXX")"
  start=$SECONDS
  args=(install -trimpath "-ldflags=$ldflags")
  [[ -n "$tags" ]] && args+=("-tags=$tags")
  args+=("$pkg@$version")
  set +e
  : >"$log"
  if [[ -n "$local_dir" ]]; then  # go.mod and go.sum of the folder pin every dependency
    (cd "$local_dir" && GOTOOLCHAIN="${toolchain:-local}" GOFLAGS=-mod=readonly CGO_ENABLED="$cgo" \
      nice -n 10 timeout "$timeout_s" go build -trimpath "-ldflags=$ldflags" -o "$tmp/$name" .) >>"$log" 2>&1
  else
    prepare_module "$mod" "$version" "$log" &&
    GOPROXY="file://$shim,$upstream_proxy" GOBIN="$tmp" CGO_ENABLED="$cgo" nice -n 10 timeout "$timeout_s" go "${args[@]}" >>"$log" 2>&1
  fi
  rc=$?
  set -e
  took=$((SECONDS - start))
  built="$(find "$tmp" -maxdepth 1 -type f -perm -u+x | head -n 1)"

  if [[ $rc -eq 0 && -n "$built" ]]; then
    rm -rf "$dest"
    mkdir -p "$dest/bin"
    mv "$built" "$bin"
    printf '%s\n' "$pin" >"$dest/.pin"
    ln -sfn "../$name-$version/bin/$name" "$DIR/bin/$name"
    printf '%-8s %-9s built in %d s\n' "$name" "$version" "$took"
  else
    if [[ $rc -eq 124 ]]; then why="timed out after ${timeout_s} s"
    elif [[ $rc -eq 0 ]]; then why="go install produced no binary"
    else why="$(reason_from_log "$log")"; fi
    printf '%-8s %-9s FAILED (%s, %s) after %d s: %s  [log: %s]\n' \
      "$name" "$version" "$need" "rc=$rc" "$took" "$why" "$log"
    rm -f "$DIR/bin/$name"   # never leave a stale version on PATH
    [[ "$need" == required ]] && failed_required=1
  fi
  rm -rf "$tmp"
done <"$PINS"

echo "bin dir: $DIR/bin"
echo "export PATH=\"$DIR/bin:\$PATH\""
exit "$failed_required"
