#!/usr/bin/env bash
# Builds what xtask/gpu/check.sh runs on a CUDA machine that has no Rust toolchain: the `vit`
# binary and the test binaries that hold device tests, built with `--features cuda`, copied into
# one folder (default .gpu/bundle, ignored by git).
#
# Needs nvcc and the CUDA libraries to link against (see the README's "Accelerators" section)
# and CUDA_COMPUTE_CAP set to the target GPU's (90 for H100/H200, 80 for A100).
set -euo pipefail
out=${1:-.gpu/bundle}
: "${CUDA_COMPUTE_CAP:?set CUDA_COMPUTE_CAP to the compute capability of the GPU, e.g. 90 for an H100}"
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$out"
# With NCCL=1 (libnccl and MPI to link against, e.g. PyPI's nvidia-nccl-cu13 and libopenmpi-dev):
# vit-nccl, built with --features nccl, and the distributed test, which trains one NCCL rank.
if [ "${NCCL:-0}" = 1 ]; then
  cargo build --release --features nccl -p vit-cli --bin vit
  cp "$target/release/vit" "$out/vit-nccl"
  cargo test --release --features nccl --no-run -p vit-cli --test distributed --message-format json 2>/dev/null |
    python3 -c '
import json, shutil, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "distributed":
        shutil.copy(m["executable"], sys.argv[1] + "/nccl-test-distributed")
        print("copied distributed")
' "$out"
fi
cargo build --release --features cuda -p vit-cli --bin vit
cp "$target/release/vit" "$out/vit"
# The integration tests that use `device_tests!` (a cpu and a cuda variant of each test).
cargo test --release --features cuda --no-run -p vit-kernels -p vit-blocks -p vit-model --message-format json 2>/dev/null |
  python3 -c '
import json, shutil, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("kernels", "modules", "model", "parity"):
        shutil.copy(m["executable"], sys.argv[1] + "/test-" + m["target"]["name"])
        print("copied", m["target"]["name"])
' "$out"
# The test binaries find their fixtures under the source tree they were built from.
pwd > "$out/source-root"
strip "$out"/vit "$out"/test-* "$out"/vit-nccl "$out"/nccl-test-* 2>/dev/null || true
ls -l "$out"
