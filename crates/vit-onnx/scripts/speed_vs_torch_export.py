"""The ONNX file `vit export` writes against the one PyTorch exports, for the same timm ViT, in
ONNX Runtime, in one run: the same logits, and the speed of each.

usage: python speed_vs_torch_export.py --vit PATH/TO/vit [--model tiny|small|base] [--threads 2] [--rounds 3] [--int8]

1. timm's vit_{model}_patch16_224 with random weights (seed 0), saved as timm saves it for the hub.
2. `vit import` of that folder, then `vit export` of the checkpoint: ours.onnx (NHWC input).
3. torch.onnx.export of the same model exactly as the reference script std_vit.py (the ONNX
   Runtime float32 side of the standard-ViT anchors) does it (opset 17, batch dynamic):
   torch.onnx (NCHW input).
4. Both in ONNX Runtime's CPU provider with the anchors' settings (intra-op threads = --threads,
   inter-op 1): the largest logit difference on one random batch, then latency (batch 1, 5 warm-up
   runs, median of 30) and throughput (batch 32, 2 warm-up runs, median of 5), the two files
   alternating, --rounds times; the median of the rounds is printed.
5. With --int8, two more sides: `vit export --precision int8` (vit's int8 scheme: a scale per
   token) and the anchors' ort-int8 (quantize_dynamic(weight_type=QInt8) of the PyTorch export:
   one scale per tensor, ONNX Runtime's fused kernels).

Needs: pip install torch timm onnx onnxruntime safetensors. Prints one RESULT line per mode.
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

ap = argparse.ArgumentParser()
ap.add_argument("--vit", required=True, help="the vit binary")
ap.add_argument("--model", choices=["tiny", "small", "base"], default="small")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--int8", action="store_true", help="also the int8 exports")
a = ap.parse_args()
os.environ["OMP_NUM_THREADS"] = str(a.threads)

import numpy as np
import onnxruntime as ort
import timm
import torch
from timm.models._hub import save_for_hf

torch.set_num_threads(a.threads)
torch.manual_seed(0)
name = f"vit_{a.model}_patch16_224"
model = timm.create_model(name, pretrained=False, num_classes=1000).eval()
work = tempfile.mkdtemp()
hub = os.path.join(work, "hub")
save_for_hf(model, hub, safe_serialization=True)
checkpoint, ours = os.path.join(work, "model.safetensors"), os.path.join(work, "ours.onnx")
subprocess.run([a.vit, "import", hub, "-o", checkpoint], check=True, stdout=subprocess.DEVNULL)
subprocess.run([a.vit, "export", checkpoint, "-o", ours], check=True)
theirs = os.path.join(work, "torch.onnx")
torch.onnx.export(model, torch.rand(1, 3, 224, 224), theirs, input_names=["x"], output_names=["y"],
                  dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, opset_version=17, dynamo=False)


if a.int8:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    ours_int8, theirs_int8 = os.path.join(work, "ours-int8.onnx"), os.path.join(work, "torch-int8.onnx")
    subprocess.run([a.vit, "export", checkpoint, "-o", ours_int8, "--precision", "int8"], check=True)
    quantize_dynamic(theirs, theirs_int8, weight_type=QuantType.QInt8)


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


sessions = {"vit-export": (session(ours), "images", True), "torch-export": (session(theirs), "x", False)}
if a.int8:
    sessions["vit-export-int8"] = (session(ours_int8), "images", True)
    sessions["torch-export-ort-int8"] = (session(theirs_int8), "x", False)
x = torch.rand(4, 3, 224, 224)
with torch.inference_mode():
    reference = model(x).numpy()
for side, (sess, input_name, nhwc) in sessions.items():
    feed = x.permute(0, 2, 3, 1).contiguous().numpy() if nhwc else x.numpy()
    out = sess.run(None, {input_name: feed})[0]
    same_class = float((out.argmax(1) == reference.argmax(1)).mean())
    print(f"{side}: largest logit difference from timm in PyTorch: {float(np.abs(out - reference).max()):.3e}, "
          f"same top-1 class on {same_class:.0%} of {len(out)} images")


def median_seconds(sess, input_name, feed, warm, iters):
    for _ in range(warm):
        sess.run(None, {input_name: feed})
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        sess.run(None, {input_name: feed})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


for mode, batch, warm, iters in [("latency", 1, 5, 30), ("infer", 32, 2, 5)]:
    x = torch.rand(batch, 3, 224, 224)
    rounds = {side: [] for side in sessions}
    for r in range(a.rounds):
        order = list(sessions) if r % 2 == 0 else list(reversed(sessions))
        for side in order:
            sess, input_name, nhwc = sessions[side]
            feed = x.permute(0, 2, 3, 1).contiguous().numpy() if nhwc else x.numpy()
            rounds[side].append(median_seconds(sess, input_name, feed, warm, iters))
    line = " ".join(
        f"{side}_ms={statistics.median(t) * 1e3:.2f} {side}_img_per_s={batch / statistics.median(t):.2f}"
        for side, t in rounds.items()
    )
    ratio = statistics.median(rounds["torch-export"]) / statistics.median(rounds["vit-export"])
    print(f"RESULT model={a.model} mode={mode} batch={batch} threads={a.threads} {line} "
          f"speed_ratio_vit_over_torch={ratio:.3f}", flush=True)
