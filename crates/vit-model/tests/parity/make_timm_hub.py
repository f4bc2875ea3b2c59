"""Writes a small random timm ViT as timm saves it for the Hugging Face hub, and its output.

    python3 -m venv .venv && .venv/bin/pip install torch==2.15.0 timm==1.0.31 safetensors==0.8.0 numpy==2.4.6
    .venv/bin/python crates/vit-model/tests/parity/make_timm_hub.py

`timm.create_model("vit_tiny_patch16_224", ...)` shrunk by model arguments, every parameter
drawn at random, saved with `timm.models.push_to_hf_hub`'s writer `save_for_hf` (the
`config.json` with `architecture`, `model_args` and `pretrained_cfg`, and `model.safetensors`
in timm's own names) into `tests/fixtures/timm_hub/` (the class-token model) and
`tests/fixtures/timm_hub_avg/` (average pooling with `fc_norm`) and
`tests/fixtures/timm_hub_no_qkv_bias_bin/` (`qkv_bias=False`, as `pytorch_model.bin`), each with `expected.safetensors`: the
float32 `images` [B, H, W, C] (pixels in [0, 1]), the `normalized` NCHW input timm's data
config makes of them, and timm's `logits` for it, computed in float64; and `photo.png`, a
13 x 10 image, with `photo_input`, what timm's evaluation transform makes of it (NCHW).
"""
import json
import math
import os

import timm
import timm.data
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.models._hub import save_for_hf

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures")
SMALL = dict(img_size=8, patch_size=2, embed_dim=16, depth=2, num_heads=2, num_classes=4)
VARIANTS = {
    # The class-token model, as vit_*_patch*_224 are.
    "timm_hub": SMALL,
    # Average pooling without a class token, with timm's norm after pooling (fc_norm).
    "timm_hub_avg": dict(SMALL, class_token=False, global_pool="avg"),
    # No bias on query, key and value (the projection keeps its own), saved as PyTorch's
    # pickle (`pytorch_model.bin`) instead of safetensors.
    "timm_hub_no_qkv_bias_bin": dict(SMALL, qkv_bias=False),
}
# The variants kept in PyTorch's own format rather than safetensors.
PICKLED = {"timm_hub_no_qkv_bias_bin"}


def main():
    for name, args in VARIANTS.items():
        write(os.path.join(FIXTURES, name), args)


def write(OUT, args):
    gen = torch.Generator().manual_seed(20261201)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **args)
    with torch.no_grad():
        for _, p in model.named_parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 1
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in) * (0.3 if p.ndim == 1 else 1.0))
    model.eval()
    os.makedirs(OUT, exist_ok=True)
    pickled = os.path.basename(OUT) in PICKLED
    save_for_hf(model, OUT, model_args=args, safe_serialization=not pickled)
    for name in os.listdir(OUT):
        if name.endswith(".bin") and not pickled:
            os.remove(os.path.join(OUT, name))
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    images = torch.rand(3, 8, 8, 3, generator=gen)
    normalized = (images.permute(0, 3, 1, 2) - mean) / std
    logits = model.double()(normalized.double())
    # A 13 x 10 photo through timm's own evaluation transform (resize the shorter side with the
    # pretrained interpolation, centre crop by crop_pct, normalise), from a generator of its
    # own so that the tensors above stay as they were.
    photo = Image.fromarray(torch.randint(0, 256, (10, 13, 3), generator=torch.Generator().manual_seed(7), dtype=torch.uint8).numpy())
    photo.save(os.path.join(OUT, "photo.png"))
    # The data config a hub user gets: from the pretrained_cfg of the saved config.json.
    with open(os.path.join(OUT, "config.json")) as f:
        saved_cfg = json.load(f)["pretrained_cfg"]
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, pretrained_cfg=saved_cfg))
    photo_input = transform(photo).unsqueeze(0)
    save_file(
        {
            "images": images.contiguous(),
            "normalized": normalized.contiguous(),
            "logits": logits.float().contiguous(),
            "photo_input": photo_input.float().contiguous(),
        },
        os.path.join(OUT, "expected.safetensors"),
        metadata={"timm": timm.__version__, "torch": torch.__version__},
    )
    print(sorted(os.listdir(OUT)), cfg["mean"], cfg["std"])


if __name__ == "__main__":
    main()
