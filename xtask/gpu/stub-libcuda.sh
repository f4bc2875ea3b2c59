#!/usr/bin/env bash
# Builds DIR/libcuda.so (and the libcuda.so.1 link), a stub of the CUDA driver library that
# defines every cu* function cudarc declares, so that a CUDA build links on a machine without a
# GPU driver (the driver's real libcuda.so.1 replaces it at run time on the GPU machine). The
# stub's functions do nothing: a binary run against it cannot use a GPU.
#
# Usage: xtask/gpu/stub-libcuda.sh DIR   (then put DIR on LIBRARY_PATH for the build)
set -euo pipefail
out=${1:?usage: $0 DIR}
registry=${CARGO_HOME:-$HOME/.cargo}/registry/src
version=$(awk '/^name = "cudarc"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$(dirname "$0")/../../Cargo.lock")
bindings=$(ls -d "$registry"/*/cudarc-"$version"/src/driver/sys/mod.rs 2>/dev/null | head -1)
[ -n "$bindings" ] || { echo "cudarc $version is not in $registry: run \`cargo fetch\` first" >&2; exit 1; }
mkdir -p "$out"
grep -hoE '^\s+fn cu[A-Z][A-Za-z0-9_]*\(' "$bindings" | sed -E 's/^\s+fn //; s/\($//' | sort -u |
  awk '{ print "void " $1 "(void) {}" }' >"$out/libcuda-stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$out/libcuda.so" "$out/libcuda-stub.c"
ln -sf libcuda.so "$out/libcuda.so.1"
echo "$out/libcuda.so: $(grep -c . "$out/libcuda-stub.c") functions of cudarc $version's driver bindings"
