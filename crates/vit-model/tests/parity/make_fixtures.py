"""Writes the PyTorch parity fixtures that `tests/parity.rs` checks the Rust model against.

    python3 -m venv .venv && .venv/bin/pip install torch safetensors numpy
    .venv/bin/python crates/vit-model/tests/parity/make_fixtures.py

For each tiny configuration it builds the same architecture as vit-model in PyTorch (TF-ordered
patches, Keras-style attention with key_dim independent of the width, the MLP adding its own
residual, the three heads), with parameter names identical to the Rust model's, initialises it
from a fixed seed and writes to `crates/vit-model/tests/fixtures/parity_<name>.safetensors`:

- `param.<name>`: every parameter (float32);
- `input.images` [B, H, W, C] float32, `input.labels` [B] int64;
- `output.logits` [B, K] and `output.loss` (mean cross-entropy), computed in float64;
- `grad.<name>`: d loss / d parameter for every parameter, computed in float64;
- metadata `vit.config`: the VitConfig as JSON.

Dropout is off (inference-mode forward), so forward and backward are deterministic.
"""
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures")

BASE = dict(
    image_size=[8, 8], channels=3, patch_size=2, projection_dim=16, num_heads=2, key_dim=12,
    value_dim=None, num_layers=2, mlp_units=[32, 16], mlp_activation_on_last=True, dropout=0.0,
    layer_norm_eps=1e-6, head="flatten", head_units=[24, 20], head_dropout=0.0, num_classes=5,
    position="learned", drop_path=0.0, layer_scale=None,
)
CONFIGS = {
    # The Keras example's architecture, shrunk.
    "flatten": dict(BASE),
    # A standard ViT: class token, no GELU after the MLP's last layer, value_dim != key_dim.
    "class_token": dict(BASE, head="class_token", head_units=[], mlp_activation_on_last=False,
                        value_dim=10, layer_norm_eps=1e-12),
}


def parameters(cfg, gen):
    """Parameter name -> float32 tensor, named as the Rust model names them."""
    d, h, dk = cfg["projection_dim"], cfg["num_heads"], cfg["key_dim"]
    dv = cfg["value_dim"] or dk
    p = cfg["patch_size"] ** 2 * cfg["channels"]
    n = (cfg["image_size"][0] // cfg["patch_size"]) * (cfg["image_size"][1] // cfg["patch_size"])
    cls = cfg["head"] == "class_token"
    params = {}

    def dense(name, i, o):
        params[f"{name}.weight"] = torch.randn(o, i, generator=gen) / math.sqrt(i)
        params[f"{name}.bias"] = torch.randn(o, generator=gen) * 0.1

    def norm(name):
        params[f"{name}.weight"] = 1 + 0.1 * torch.randn(d, generator=gen)
        params[f"{name}.bias"] = 0.1 * torch.randn(d, generator=gen)

    dense("patch_encoder.projection", p, d)
    params["patch_encoder.position_embedding.weight"] = 0.1 * torch.randn(n + cls, d, generator=gen)
    if cls:
        params["patch_encoder.class_token"] = 0.1 * torch.randn(1, 1, d, generator=gen)
    for i in range(cfg["num_layers"]):
        b = f"blocks.{i}"
        norm(f"{b}.norm1")
        dense(f"{b}.attention.query", d, h * dk)
        dense(f"{b}.attention.key", d, h * dk)
        dense(f"{b}.attention.value", d, h * dv)
        dense(f"{b}.attention.output", h * dv, d)
        norm(f"{b}.norm2")
        prev = d
        for j, u in enumerate(cfg["mlp_units"]):
            dense(f"{b}.mlp.layers.{j}", prev, u)
            prev = u
    norm("norm")
    prev = (n + cls) * d if cfg["head"] == "flatten" else d
    for j, u in enumerate(cfg["head_units"]):
        dense(f"head.layers.{j}", prev, u)
        prev = u
    dense("head.classifier", prev, cfg["num_classes"])
    return params


def forward(cfg, w, images):
    b, hh, ww, c = images.shape
    s = cfg["patch_size"]
    d, h, dk = cfg["projection_dim"], cfg["num_heads"], cfg["key_dim"]
    dv = cfg["value_dim"] or dk
    eps = cfg["layer_norm_eps"]
    lin = lambda x, name: x @ w[f"{name}.weight"].T + w[f"{name}.bias"]
    ln = lambda x, name: F.layer_norm(x, (d,), w[f"{name}.weight"], w[f"{name}.bias"], eps)

    # TF extract_patches order: patch row, patch column, then (row, col, channel) inside.
    x = images.reshape(b, hh // s, s, ww // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, -1, s * s * c)
    x = lin(x, "patch_encoder.projection")
    if cfg["head"] == "class_token":
        x = torch.cat([w["patch_encoder.class_token"].expand(b, 1, d), x], dim=1)
    x = x + w["patch_encoder.position_embedding.weight"]
    n = x.shape[1]
    for i in range(cfg["num_layers"]):
        blk = f"blocks.{i}"
        y = ln(x, f"{blk}.norm1")
        q = lin(y, f"{blk}.attention.query").reshape(b, n, h, dk).transpose(1, 2) / math.sqrt(dk)
        k = lin(y, f"{blk}.attention.key").reshape(b, n, h, dk).transpose(1, 2)
        v = lin(y, f"{blk}.attention.value").reshape(b, n, h, dv).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
        x2 = x + lin(a.transpose(1, 2).reshape(b, n, h * dv), f"{blk}.attention.output")
        y = ln(x2, f"{blk}.norm2")
        last = len(cfg["mlp_units"]) - 1
        for j in range(len(cfg["mlp_units"])):
            y = lin(y, f"{blk}.mlp.layers.{j}")
            if j < last or cfg["mlp_activation_on_last"]:
                y = F.gelu(y)  # exact (erf) GELU, as Keras and vit-blocks use
        x = x2 + y
    x = ln(x, "norm")
    if cfg["head"] == "flatten":
        x = x.flatten(1)
    elif cfg["head"] == "class_token":
        x = x[:, 0]
    else:
        x = x.mean(dim=1)
    for j in range(len(cfg["head_units"])):
        x = F.gelu(lin(x, f"head.layers.{j}"))
    return lin(x, "head.classifier")


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, cfg in CONFIGS.items():
        gen = torch.Generator().manual_seed(20261126)
        params32 = parameters(cfg, gen)
        batch = 3
        images = torch.rand(batch, cfg["image_size"][0], cfg["image_size"][1], cfg["channels"], generator=gen)
        labels = torch.randint(0, cfg["num_classes"], (batch,), generator=gen)
        w = {k: v.double().requires_grad_(True) for k, v in params32.items()}
        logits = forward(cfg, w, images.double())
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        tensors = {f"param.{k}": v.contiguous() for k, v in params32.items()}
        tensors.update({f"grad.{k}": v.grad.float().contiguous() for k, v in w.items()})
        tensors["input.images"] = images.contiguous()
        tensors["input.labels"] = labels.contiguous()
        tensors["output.logits"] = logits.detach().float().contiguous()
        tensors["output.loss"] = loss.detach().float().reshape(1)
        path = os.path.join(OUT, f"parity_{name}.safetensors")
        save_file(tensors, path, metadata={"vit.config": json.dumps(cfg), "torch": torch.__version__})
        print(f"{path}: {len(params32)} parameters, loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
