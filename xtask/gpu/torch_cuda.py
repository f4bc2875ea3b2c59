"""The PyTorch reference on a CUDA GPU, for `xtask/gpu/check.sh`.

The anchors in ../shared/anchors measure on the CPU only. This script builds *their* model
(`torch_vit.ViT`, imported from --anchors, so the architecture and FLOPs are theirs) and times it
on the GPU the same way `vit bench --device cuda` is timed: a training step is forward, backward
and an AdamW step (lr 1e-3, weight decay 1e-4), inference is batch 256 under inference_mode,
latency is batch 1; each step ends in a synchronisation (a host read of the loss or the output).

Usage:
  python3 torch_cuda.py --anchors DIR --config K|M --mode train|infer|latency
                        [--precision f32|bf16] [--iters N] [--warmup N]

--precision bf16 runs the step under torch.autocast(bfloat16) with f32 parameters and optimizer,
the same mixed precision as `vit train --precision bf16`. TF32 stays off (PyTorch's default for
matmuls), as in candle. Prints one `ANCHOR key=value ...` line, like the anchors.
"""
import argparse
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--anchors", required=True, help="the folder holding torch_vit.py and vit_configs.py")
    ap.add_argument("--config", choices=["K", "M"], default="K")
    ap.add_argument("--mode", choices=["train", "infer", "latency"], default="train")
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--iters", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=0)
    a = ap.parse_args()

    sys.path.insert(0, os.path.abspath(a.anchors))
    import torch
    import torch.nn.functional as F
    from torch_vit import ViT
    from vit_configs import CONFIGS, INFER_BATCH, emit, forward_flops, median, param_count

    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    cfg = CONFIGS[a.config]
    model = ViT(cfg).to(dev)
    assert sum(p.numel() for p in model.parameters()) == param_count(cfg)
    batch = {"train": cfg["batch"], "infer": INFER_BATCH, "latency": 1}[a.mode]
    iters = a.iters or {"train": 50, "infer": 50, "latency": 200}[a.mode]
    warm = a.warmup or {"train": 10, "infer": 10, "latency": 20}[a.mode]
    g = torch.Generator().manual_seed(1234)
    x = torch.rand(batch, cfg["image"], cfg["image"], cfg["channels"], generator=g).to(dev)
    y = torch.randint(0, cfg["classes"], (batch,), generator=g).to(dev)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.precision == "bf16")

    if a.mode == "train":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = F.cross_entropy(model(x).float(), y)
            loss.backward()
            opt.step()
            return loss.item()
    else:
        model.eval()

        def step():
            with torch.inference_mode(), autocast:
                return model(x).float().sum().item()

    t0 = time.perf_counter()
    step()
    first_s = time.perf_counter() - t0
    for _ in range(warm - 1):
        step()
    torch.cuda.reset_peak_memory_stats()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
    med = median(ts)
    imgs = batch / med
    fwd, _ = forward_flops(cfg)
    res = dict(fw="torch-cuda" + ("" if a.precision == "f32" else "-" + a.precision), cfg=a.config, mode=a.mode,
               batch=batch, device=torch.cuda.get_device_name().replace(" ", "_"), median_s=med, min_s=min(ts), img_per_s=imgs,
               gflops=imgs * fwd * (3 if a.mode == "train" else 1) / 1e9)
    if a.mode == "latency":
        res["latency_ms"] = med * 1e3
    res.update(first_iter_s=first_s, iters=iters, warmup=warm,
               gpu_peak_allocated_mb=torch.cuda.max_memory_allocated() / 2**20, torch=torch.__version__)
    emit(**res)


if __name__ == "__main__":
    main()
