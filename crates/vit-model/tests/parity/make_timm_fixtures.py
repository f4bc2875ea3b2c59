"""Writes parity fixtures from timm's own VisionTransformer, not a transcription of ours.

    python3 -m venv .venv && .venv/bin/pip install torch==2.15.0 timm==1.0.31 safetensors==0.8.0 numpy==2.4.6
    .venv/bin/python crates/vit-model/tests/parity/make_timm_fixtures.py

`make_fixtures.py` writes the Keras-style model out by hand. This script builds the models
with `timm.models.vision_transformer.VisionTransformer` (its PatchEmbed convolution, fused-qkv
Attention, Mlp, LayerScale, pooling), for the features a hand transcription could get wrong
together with the Rust code: the mean-pool head, the class-token head, layer scale, and the
fixed 2-D sin-cos position table (timm's `build_sincos2d_pos_embed` in MAE's and big_vision's
layout, installed as the model's `pos_embed`). Every parameter is drawn at random (so layer scales and norms are not their
trivial initial values), the forward and backward run in float64, and the file holds, under
vit-model's parameter names:

- `param.<name>`: every parameter (float32), timm's tensors renamed and reshaped: the patch
  convolution `[D, C, p, p]` to a linear layer over TF-ordered patches `[D, p*p*C]`, the fused
  `qkv` split into query, key and value;
- `input.images` [B, H, W, C] float32, `input.labels` [B] int64;
- `output.logits` [B, K] and `output.loss` (mean cross-entropy) in float64, stored as float32;
- `grad.<name>`: d loss / d parameter, renamed and reshaped the same way;
- metadata `vit.config` (the VitConfig as JSON), `timm` and `torch` (their versions).

Dropout and drop path are off: they are checked statistically by the Rust tests.
"""
import functools
import json
import math
import os

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from timm.models.vision_transformer import VisionTransformer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures")

D, HEADS, DEPTH, PATCH, IMAGE, CHANNELS, CLASSES = 16, 2, 2, 2, 8, 3, 5

BASE = dict(
    image_size=[IMAGE, IMAGE], channels=CHANNELS, patch_size=PATCH, projection_dim=D, num_heads=HEADS,
    key_dim=D // HEADS, value_dim=None, num_layers=DEPTH, mlp_units=[2 * D, D], mlp_activation_on_last=False,
    dropout=0.0, layer_norm_eps=1e-6, head="class_token", head_units=[], head_dropout=0.0, num_classes=CLASSES,
    position="learned", drop_path=0.0, layer_scale=None,
)
CONFIGS = {
    # timm's standard ViT with layer scale (CaiT / DeiT III style).
    "timm_class_token_layer_scale": (dict(BASE, layer_scale=0.1), dict(global_pool="token", init_values=0.1)),
    # Mean pooling after the final norm (timm: fc_norm off), fixed 2-D sin-cos positions.
    "timm_mean_pool_sincos": (
        dict(BASE, head="mean_pool", position="sincos2d"),
        dict(global_pool="avg", class_token=False, fc_norm=False),
    ),
}


def build(kwargs, gen):
    model = VisionTransformer(
        img_size=IMAGE, patch_size=PATCH, in_chans=CHANNELS, num_classes=CLASSES, embed_dim=D, depth=DEPTH,
        num_heads=HEADS, mlp_ratio=2.0, qkv_bias=True, act_layer=torch.nn.GELU,
        norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6), **kwargs,
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "pos_embed":
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1 and ("norm" in name or name.endswith("gamma")):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            else:
                fan_in = p[0].numel() if p.ndim > 1 else 1
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in) * (0.1 if p.ndim == 1 else 1.0))
    return model


def ours(name, t):
    """timm parameter (or its gradient) -> [(vit-model name, tensor)]."""
    if name == "patch_embed.proj.weight":
        d, c, kh, kw = t.shape
        # [D, C, p, p] -> [D, p, p, C]: TF patch order, channel fastest.
        return [("patch_encoder.projection.weight", t.permute(0, 2, 3, 1).reshape(d, kh * kw * c))]
    if name == "patch_embed.proj.bias":
        return [("patch_encoder.projection.bias", t)]
    if name == "cls_token":
        return [("patch_encoder.class_token", t)]
    if name == "pos_embed":
        return [("patch_encoder.position_embedding.weight", t.squeeze(0))]
    if name.startswith("norm."):
        return [(name, t)]
    if name.startswith("head."):
        return [("head.classifier." + name.split(".")[1], t)]
    parts = name.split(".")
    block, rest = ".".join(parts[:2]), ".".join(parts[2:])
    if rest.startswith("attn.qkv."):
        kind = rest.split(".")[-1]
        return [(f"{block}.attention.{w}.{kind}", part) for w, part in zip(["query", "key", "value"], t.chunk(3, dim=0))]
    renames = {
        "attn.proj": "attention.output", "mlp.fc1": "mlp.layers.0", "mlp.fc2": "mlp.layers.1",
        "norm1": "norm1", "norm2": "norm2",
    }
    if rest in ("ls1.gamma", "ls2.gamma"):
        return [(f"{block}.layer_scale{rest[2]}", t)]
    module, kind = rest.rsplit(".", 1)
    return [(f"{block}.{renames[module]}.{kind}", t)]


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, (cfg, kwargs) in CONFIGS.items():
        gen = torch.Generator().manual_seed(20261201)
        model = build(kwargs, gen).double().eval()
        if cfg["position"] == "sincos2d":
            grid = IMAGE // PATCH
            # Columns first, then rows, each sin then cos: MAE's and big_vision's layout. timm's
            # `reverse_coord` also orders the tokens column by column; transposed back to rows.
            table = build_sincos2d_pos_embed([grid, grid], dim=D, reverse_coord=True, interleave_sin_cos=True)
            table = table.reshape(grid, grid, D).transpose(0, 1).reshape(grid * grid, D)
            model.pos_embed = torch.nn.Parameter(table.double().unsqueeze(0), requires_grad=False)
        batch = 3
        images = torch.rand(batch, IMAGE, IMAGE, CHANNELS, generator=gen)
        labels = torch.randint(0, CLASSES, (batch,), generator=gen)
        logits = model(images.double().permute(0, 3, 1, 2))
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        tensors = {}
        for pname, p in model.named_parameters():
            if not p.requires_grad:
                continue
            for k, v in ours(pname, p.detach()):
                tensors[f"param.{k}"] = v.float().contiguous()
            for k, v in ours(pname, p.grad):
                tensors[f"grad.{k}"] = v.float().contiguous()
        tensors["input.images"] = images.contiguous()
        tensors["input.labels"] = labels.contiguous()
        tensors["output.logits"] = logits.detach().float().contiguous()
        tensors["output.loss"] = loss.detach().float().reshape(1)
        path = os.path.join(OUT, f"parity_{name}.safetensors")
        metadata = {"vit.config": json.dumps(cfg), "timm": timm.__version__, "torch": torch.__version__}
        save_file(tensors, path, metadata=metadata)
        count = sum(1 for k in tensors if k.startswith("param."))
        print(f"{path}: {count} parameters, loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
