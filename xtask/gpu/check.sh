#!/usr/bin/env bash
# The GPU check, run on a CUDA machine with the bundle that xtask/gpu/build.sh made:
#   1. the device tests (the `cuda` variant of every `device_tests!` test);
#   2. the `mnist` recipe for a few epochs on the GPU, in f32 and in bf16 mixed precision;
#   3. `vit bench` against the PyTorch reference (xtask/gpu/torch_cuda.py, the anchors' model)
#      on the same GPU, one process per measurement, with the GPU's memory in use sampled
#      every 50 ms by nvidia-smi for both;
#   4. where the bundle has vit-nccl (NCCL=1 xtask/gpu/build.sh) and the machine has mpirun:
#      one NCCL rank against the plain run (the weights, and the images/s of the mnist recipe).
#
# Usage: xtask/gpu/check.sh BUNDLE DATA_DIR ANCHORS_DIR OUT_DIR
#   DATA_DIR holds mnist/ (the four IDX files); ANCHORS_DIR holds torch_vit.py and
#   vit_configs.py; EPOCHS (default 3) sets the training length, TRAIN_TIMEOUT (seconds,
#   default 600) stops a training run early as Ctrl-C does (it saves a checkpoint and its
#   metrics); PYTHON names the interpreter with PyTorch (default python3).
set -uo pipefail
bundle=$1 data=$2 anchors=$3 out=$4
epochs=${EPOCHS:-3}
train_timeout=${TRAIN_TIMEOUT:-600}
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
failures=0

# cuBLAS, cuRAND, NVRTC and cudart 13: from the system, else from PyTorch's CUDA wheels.
for lib in libcublas.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13; do
  if ! ldconfig -p | grep -q "$lib"; then
    found=$(find / -name "$lib" -not -path '/proc/*' 2>/dev/null | head -1)
    [ -n "$found" ] && export LD_LIBRARY_PATH=$(dirname "$found"):${LD_LIBRARY_PATH:-}
  fi
done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"

echo "== 1. device tests ($(date +%T))"
src=$(cat "$bundle/source-root")
if [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$PWD" "$src"; fi
for t in "$bundle"/test-*; do
  echo "-- $(basename "$t")"
  "$t" cuda --test-threads 1 2>&1 | tee -a "$out/tests.log" | grep -E '^test |test result' || failures=$((failures + 1))
done

echo "== 2. training: mnist recipe, $epochs epochs"
for precision in f32 bf16; do
  echo "-- $precision ($(date +%T))"
  timeout -s INT "$train_timeout" "$bundle/vit" --device cuda train --recipe mnist --data-dir "$data" --epochs "$epochs" --precision "$precision" \
    --out "$out/mnist-$precision" --quiet 2>&1 | tee "$out/train-$precision.log" | tail -4 || failures=$((failures + 1))
done

echo "== 3. bench against PyTorch on the same GPU ($(date +%T))"
# Runs one measurement; prints its ANCHOR line with the peak of the GPU's used memory added.
measure() {
  local log=$1 peak=0 m pid
  shift
  "$@" >"$log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    m=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1)
    [[ $m =~ ^[0-9]+$ ]] && ((m > peak)) && peak=$m
    sleep 0.05
  done
  wait "$pid" || { echo "FAILED: $* (see $log)"; tail -5 "$log"; return 1; }
  echo "$(grep '^ANCHOR' "$log" | tail -1) gpu_used_peak_mb=$peak"
}
: >"$out/bench.txt"
for cfg in K M; do
  for mode in train infer latency; do
    precisions="f32 bf16"
    [ "$mode" = latency ] && precisions=f32
    for precision in $precisions; do
      iters=50 warmup=10
      [ "$mode" = latency ] && iters=200 warmup=20
      name="$cfg-$mode-$precision"
      measure "$out/vit-$name.log" "$bundle/vit" --device cuda bench --config "$cfg" --mode "$mode" \
        --precision "$precision" --iters $iters --warmup $warmup | tee -a "$out/bench.txt" || failures=$((failures + 1))
      measure "$out/torch-$name.log" "$python" "$here/torch_cuda.py" --anchors "$anchors" --config "$cfg" \
        --mode "$mode" --precision "$precision" --iters $iters --warmup $warmup | tee -a "$out/bench.txt" ||
        failures=$((failures + 1))
    done
  done
done

"$python" - "$out/bench.txt" <<'PY' | tee "$out/bench-table.txt"
import sys
rows = {}
for line in open(sys.argv[1]):
    if not line.startswith("ANCHOR"):
        continue
    kv = dict(p.split("=", 1) for p in line.split()[1:])
    side = "vit" if kv["fw"].startswith("vit-rs") else "torch"
    precision = "bf16" if kv["fw"].endswith("bf16") else "f32"
    rows.setdefault((kv["cfg"], kv["mode"], precision), {})[side] = kv
print(f"{'config':6} {'mode':8} {'prec':5} {'vit-rs img/s':>13} {'torch img/s':>12} {'ratio':>6} {'vit GPU MB':>10} {'torch GPU MB':>12}")
for (cfg, mode, precision), sides in sorted(rows.items()):
    v, t = sides.get("vit"), sides.get("torch")
    if not (v and t):
        continue
    vi, ti = float(v["img_per_s"]), float(t["img_per_s"])
    extra = f"  latency {float(v['latency_ms']):.3f} vs {float(t['latency_ms']):.3f} ms" if mode == "latency" else ""
    print(f"{cfg:6} {mode:8} {precision:5} {vi:13.1f} {ti:12.1f} {vi / ti:6.2f} {v['gpu_used_peak_mb']:>10} {t['gpu_used_peak_mb']:>12}{extra}")
PY
echo "== 4. NCCL, one rank ($(date +%T))"
if [ ! -x "$bundle/vit-nccl" ]; then
  echo "skipped: the bundle has no vit-nccl (build it with NCCL=1 xtask/gpu/build.sh)"
elif ! command -v mpirun >/dev/null; then
  echo "skipped: no mpirun on this machine (NCCL jobs are launched by MPI: apt-get install openmpi-bin)"
elif ldd "$bundle/vit-nccl" | grep -q 'not found'; then
  echo "skipped: vit-nccl lacks libraries here:"; ldd "$bundle/vit-nccl" | grep 'not found'
else
  VIT_BIN="$bundle/vit-nccl" "$bundle/nccl-test-distributed" cuda --test-threads 1 2>&1 | tee -a "$out/tests.log" |
    grep -E '^test |test result|relative difference' || failures=$((failures + 1))
  for side in plain nccl; do
    launch=() distributed=()
    [ "$side" = nccl ] && launch=(mpirun --allow-run-as-root -n 1) distributed=(--distributed nccl)
    "${launch[@]}" "$bundle/vit-nccl" --device cuda train --recipe mnist --data-dir "$data" --epochs 1 \
      "${distributed[@]}" --out "$out/nccl-$side" --quiet --no-report 2>&1 | tee "$out/train-nccl-$side.log" | tail -1 ||
      failures=$((failures + 1))
  done
fi

echo "failures: $failures ($(date +%T))"
exit $((failures > 0))
