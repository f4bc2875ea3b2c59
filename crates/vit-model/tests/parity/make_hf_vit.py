"""Writes a small random Hugging Face ViT as `transformers` saves it, and its own output.

    python3 -m venv .venv && .venv/bin/pip install torch==2.15.0 transformers==5.24.0 safetensors==0.8.0 numpy==2.4.6
    .venv/bin/python crates/vit-model/tests/parity/make_hf_vit.py

`ViTForImageClassification` from a small `ViTConfig`, every parameter drawn at random, saved
with `save_pretrained` (`config.json`, `model.safetensors`) and a `ViTImageProcessor`
(`preprocessor_config.json`, mean = std = 0.5 as google/vit-*) into
`tests/fixtures/hf_vit/`, plus `expected.safetensors`: `images` [B, H, W, C] float32 pixels
in [0, 1], the processor's `pixel_values` for them (NCHW), `labels`, and the model's
`logits`, `loss` (mean cross-entropy) and `grad.<name>` (d loss / d parameter, in
transformers' names and layouts), computed in float64 in eval mode; and `photo.png`, a
13 x 10 image, with `photo_input`, the processor's `pixel_values` for it.
"""
import math
import os

import numpy as np
import safetensors.torch
import torch
import transformers
from PIL import Image
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
    labels = torch.tensor([2, 0, 1])
    model = model.double()
    logits = model(pixel_values=pixel_values.double()).logits
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()
    # transformers 5 names its modules otherwise inside (`vit.layers.0.attention.k_proj`) than
    # in the files it saves (`vit.encoder.layer.0.attention.attention.key`): each gradient is
    # stored under the saved name of the tensor with the same values.
    saved = safetensors.torch.load_file(os.path.join(OUT, "model.safetensors"))
    grads = {}
    for name, p in model.named_parameters():
        matches = [k for k, v in saved.items() if v.shape == p.shape and torch.equal(v.double(), p.detach())]
        assert len(matches) == 1, (name, matches)
        grads[f"grad.{matches[0]}"] = p.grad.float().contiguous()
    # A 13 x 10 photo through the processor as it is saved (resized to 8 x 8, bilinear), from a
    # generator of its own so that the tensors above stay as they were.
    photo = Image.fromarray(torch.randint(0, 256, (10, 13, 3), generator=torch.Generator().manual_seed(7), dtype=torch.uint8).numpy())
    photo.save(os.path.join(OUT, "photo.png"))
    photo_input = processor(photo, return_tensors="pt")["pixel_values"]
    save_file(
        {
            "photo_input": photo_input.float().contiguous(),
            "images": images.contiguous(),
            "pixel_values": pixel_values.float().contiguous(),
            "labels": labels.contiguous(),
            "logits": logits.detach().float().contiguous(),
            "loss": loss.detach().float().reshape(1),
            **grads,
        },
        os.path.join(OUT, "expected.safetensors"),
        metadata={"transformers": transformers.__version__, "torch": torch.__version__},
    )
    print(sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
