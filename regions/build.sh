#!/usr/bin/env bash
# Builds what `docker-compose -f regions/docker-compose.yml up` runs, with no registry:
#   1. a statically linked meridian (glibc, +crt-static; profile `demo` = release without fat
#      LTO), in its own target dir so it never disturbs the normal build;
#   2. the image meridian:demo, FROM scratch with that binary only.
# Usage: regions/build.sh            (JOBS=N to change cargo's parallelism, default 2)
set -euo pipefail
cd "$(dirname "$0")/.."

triple=x86_64-unknown-linux-gnu
bin=target/static/$triple/demo/meridian
start=$(date +%s)
echo "== static build (cargo --profile demo --target $triple)"
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --profile demo --target "$triple" --target-dir target/static --bin meridian -j "${JOBS:-2}"

# A FROM-scratch image has no loader and no libc: refuse a binary that needs either.
if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -q 'statically linked'; then
  echo "error: $bin is dynamically linked:" >&2
  ldd "$bin" >&2
  exit 1
fi
if command -v file >/dev/null 2>&1; then file "$bin"; fi

echo "== image meridian:demo (FROM scratch)"
ctx=regions/.build
mkdir -p "$ctx"
cp "$bin" "$ctx/meridian"
docker build -q -t meridian:demo -f regions/Dockerfile "$ctx"
docker image ls meridian:demo
echo "built in $(( $(date +%s) - start )) s"
