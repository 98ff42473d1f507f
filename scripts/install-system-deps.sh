#!/usr/bin/env bash
# Install the real parts the tests and demo run against, if missing. Each check tests for
# what the build or the tests read (a command, a header, a .proto, a library), not a name:
# Debian's docker-registry (CNCF distribution) and skopeo (an independent OCI client);
# protoc, which Dragonfly's API crate runs when tests/clients/dragonfly-hf is built;
# chromium, which drives the web page tests;
# PostgreSQL for Harbor (built from ../shared/peer-src by scripts/peers/build-harbor.sh).
set -euo pipefail

missing=()
command -v docker-registry >/dev/null 2>&1 || command -v registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
# MariaDB and Redis: the stores of Dragonfly's manager (tests/integration/test_dragonfly.py);
# Redis is also what gateway replicas share (tests/integration/test_gateway_replicas.py).
command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# PostgreSQL: Harbor's database (modelpack.testing.harbor runs initdb, postgres and createdb
# from Debian's /usr/lib/postgresql/N/bin; Redis and docker-registry above are Harbor's too).
ls /usr/lib/postgresql/*/bin/initdb /usr/lib/postgresql/*/bin/createdb >/dev/null 2>&1 || missing+=(postgresql)
# libclang: bindgen in librocksdb-sys, built with Dragonfly's dfdaemon (crate dragonfly-client).
ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || missing+=(libclang-dev)
# nginx: the blob cache of `make bench-cluster`'s case (b3), the static file server `make bench`
# measures the gateway beside, the Harbor portal's front of `make harbor-screenshots`
# (benchmarks/nginx.py, scripts/harbor_screenshots.py), and the round-robin balancer in
# front of gateway replicas (modelpack/testing/replicas.py).
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
# wrk: the load of `make bench`'s gateway-beside-nginx table (benchmarks/gateway_speed.py).
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
[ -x /usr/bin/time ] || missing+=(time)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# protoc and the well-known .proto files it imports (google/protobuf/duration.proto, ...):
# Dragonfly's API crate compiles its protos when tests/clients and dfdaemon are built.
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/duration.proto ] || missing+=(libprotobuf-dev)
# cmake: aws-lc-sys (rustls' crypto, in dfdaemon) runs it; a C and C++ compiler for RocksDB.
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
# modelpack image: umoci unpacks the images in tests; busybox-static is the modelcar's base.
command -v umoci >/dev/null 2>&1 || missing+=(umoci)
# ...and containerd with runc pull, mount and run them as a kubelet's runtime would.
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
command -v runc >/dev/null 2>&1 || missing+=(runc)
# Headless Chromium: the web page tests look at the page as a person's browser shows it.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v git-lfs >/dev/null 2>&1 || missing+=(git-lfs)  # git clone/push of the gateway (test_gateway_git.py)
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || missing+=(busybox-static)
# Headless Chromium: the gateway's web page as a browser renders it, and a real cross-site
# page posting to the gateway's write routes (tests/support/browser.py).
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  sudo=""
elif command -v sudo >/dev/null 2>&1; then
  sudo="sudo"
else
  echo "error: need ${missing[*]} (Debian packages) and cannot install them without root" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: need ${missing[*]}; install them with your package manager" >&2
  exit 1
fi
echo "installing ${missing[*]} (Debian packages)..."
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The package starts a system-wide registry on :5000 where an init system runs; we never use it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
  $sudo systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
# Likewise nginx's default site (0.0.0.0:80): our nginx instances run from their own configs.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
  $sudo systemctl disable --now nginx >/dev/null 2>&1 || true
fi
