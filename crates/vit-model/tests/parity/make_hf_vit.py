"""Writes a small random Hugging Face ViT as `transformers` saves it, and its own output.

    python3 -m venv .venv && .venv/bin/pip install torch transformers safetensors numpy
    .venv/bin/python crates/vit-model/tests/parity/make_hf_vit.py

`ViTForImageClassification` from a small `ViTConfig`, every parameter drawn at random, saved
with `save_pretrained` (`config.json`, `model.safetensors`) and a `ViTImageProcessor`
(`preprocessor_config.json`, mean = std = 0.5 as google/vit-*) into
`tests/fixtures/hf_vit/`, plus `expected.safetensors`: `images` [B, H, W, C] float32 pixels
in [0, 1], the processor's `pixel_values` for them (NCHW), and the model's `logits`, computed
in float64 in eval mode.
"""
import math
import os

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "hf_vit")


def main():
    gen = torch.Generator().manual_seed(20261201)
    config = ViTConfig(
        image_size=8, patch_size=2, num_channels=3, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, hidden_act="gelu", layer_norm_eps=1e-12, num_labels=3,
        id2label={0: "cat", 1: "dog", 2: "owl"}, label2id={"cat": 0, "dog": 1, "owl": 2},
    )
    model = ViTForImageClassification(config)
    with torch.no_grad():
        for _, p in model.named_parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 1
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in) * (0.3 if p.ndim == 1 else 1.0))
    model.eval()
    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)
    processor = ViTImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor.save_pretrained(OUT)
    images = torch.rand(3, 8, 8, 3, generator=gen)
    # The processor takes uint8-range pixels and rescales by 1/255; these are already in
    # [0, 1], so they go in times 255 with resizing off.
    pixel_values = processor(
        [np.asarray(im * 255.0) for im in images], do_resize=False, return_tensors="pt"
    )["pixel_values"]
    with torch.no_grad():
        logits = model.double()(pixel_values=pixel_values.double()).logits
    save_file(
        {"images": images.contiguous(), "pixel_values": pixel_values.float().contiguous(), "logits": logits.float().contiguous()},
        os.path.join(OUT, "expected.safetensors"),
        metadata={"transformers": transformers.__version__, "torch": torch.__version__},
    )
    print(sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
