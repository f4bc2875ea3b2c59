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
strip "$out"/vit "$out"/test-*
ls -l "$out"
