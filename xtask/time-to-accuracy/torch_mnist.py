"""The project's time-to-accuracy recipe in PyTorch, for `cargo xtask time-to-accuracy`.

The same model, optimiser, schedule, loss and augmentation as the recipe the xtask writes for
`vit train` (it passes every setting on the command line, so there is one source of them):

  patches of 4x4 (flattened row, column, channel as tf.image.extract_patches does), a Linear
  projection plus a learned position table, pre-norm blocks (LayerNorm eps 1e-6, multi-head
  attention with a fused QKV, residual; LayerNorm, an MLP Dense(u, gelu) per unit, residual),
  LayerNorm, mean over the tokens, a Linear head. Initialised as the project (and Keras) does:
  Glorot-uniform weights, zero biases, positions uniform in [-0.05, 0.05].
  AdamW (betas 0.9/0.999, eps 1e-7; no decay on biases, norms and positions), linear warm-up
  then cosine decay per step, global-norm clipping, label-smoothed cross-entropy. Training
  images normalised by the training split's mean and std, shifted by up to `--crop-padding`
  pixels (zero fill: MNIST's border is black, where the project reflects it).

After every epoch it evaluates the test set and prints one line:
  EPOCH epoch=N test_top1=F train_loss=F elapsed_s=F
Reads MNIST's four IDX files (raw or .gz) from --data-dir (or its mnist/ folder).
"""
import argparse
import gzip
import math
import os
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

START = time.perf_counter()


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def find(data_dir, stem):
    for folder in (os.path.join(data_dir, "mnist"), data_dir):
        for name in (stem, stem + ".gz"):
            path = os.path.join(folder, name)
            if os.path.exists(path):
                return path
    raise SystemExit(f"{stem}(.gz) is in neither {data_dir}/mnist nor {data_dir}")


class Attention(nn.Module):
    def __init__(self, dim, heads, key_dim):
        super().__init__()
        self.heads, self.key_dim = heads, key_dim
        self.qkv = nn.Linear(dim, 3 * heads * key_dim)
        self.out = nn.Linear(heads * key_dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.key_dim).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, self.heads * self.key_dim))


class Block(nn.Module):
    def __init__(self, dim, heads, key_dim, mlp_units):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, key_dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        layers, width = [], dim
        for units in mlp_units:
            layers += [nn.Linear(width, units), nn.GELU()]
            width = units
        self.mlp = nn.Sequential(*layers)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.patch = a.patch_size
        tokens = (a.image_size // a.patch_size) ** 2
        self.proj = nn.Linear(a.patch_size * a.patch_size, a.dim)
        self.position = nn.Parameter(torch.empty(tokens, a.dim).uniform_(-0.05, 0.05))
        self.blocks = nn.ModuleList(
            [Block(a.dim, a.heads, a.key_dim, a.mlp_units) for _ in range(a.layers)])
        self.norm = nn.LayerNorm(a.dim, eps=1e-6)
        self.head = nn.Linear(a.dim, 10)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, images):  # (B, H, W) normalised
        b, h, w = images.shape
        s = self.patch
        x = images.reshape(b, h // s, s, w // s, s).permute(0, 1, 3, 2, 4).reshape(b, -1, s * s)
        x = self.proj(x) + self.position
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(dim=1))


def shifted(images, padding, generator):
    """Each image moved by up to `padding` pixels along each axis (zero fill)."""
    if padding == 0:
        return images
    b, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, :, None].expand(b, h, w)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, :].expand(b, h, w)
    return padded[torch.arange(b)[:, None, None], rows, cols]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    for name, kind in [("epochs", int), ("batch-size", int), ("eval-batch-size", int), ("lr", float),
                       ("min-lr", float), ("warmup-epochs", float), ("weight-decay", float),
                       ("clip-grad-norm", float), ("label-smoothing", float), ("crop-padding", int),
                       ("seed", int), ("threads", int), ("image-size", int), ("patch-size", int),
                       ("dim", int), ("heads", int), ("key-dim", int), ("layers", int)]:
        p.add_argument("--" + name, type=kind, required=True)
    p.add_argument("--mlp-units", type=lambda s: [int(u) for u in s.split(",")], required=True)
    p.add_argument("--parameters", type=int, required=True, help="the project's count, to check the model")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    train_x = torch.from_numpy(read_idx(find(a.data_dir, "train-images-idx3-ubyte")).copy())
    train_y = torch.from_numpy(read_idx(find(a.data_dir, "train-labels-idx1-ubyte")).astype(np.int64))
    test_x = torch.from_numpy(read_idx(find(a.data_dir, "t10k-images-idx3-ubyte")).copy())
    test_y = torch.from_numpy(read_idx(find(a.data_dir, "t10k-labels-idx1-ubyte")).astype(np.int64))
    scaled = train_x.double() / 255.0
    mean, std = scaled.mean().item(), scaled.std(unbiased=False).item()
    normalise = lambda x: ((x.float() / 255.0) - mean) / std  # noqa: E731
    train_x, test_x = normalise(train_x), normalise(test_x)

    model = ViT(a)
    count = sum(t.numel() for t in model.parameters())
    if count != a.parameters:
        raise SystemExit(f"the PyTorch model has {count} parameters, the project's {a.parameters}")
    decay = [t for n, t in model.named_parameters() if t.ndim > 1 and n != "position"]
    no_decay = [t for n, t in model.named_parameters() if t.ndim <= 1 or n == "position"]
    optimiser = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=a.lr, betas=(0.9, 0.999), eps=1e-7)
    steps_per_epoch = math.ceil(len(train_x) / a.batch_size)
    warmup, total = round(a.warmup_epochs * steps_per_epoch), a.epochs * steps_per_epoch

    def lr_at(step):
        if step < warmup:
            return a.lr * (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return a.min_lr + 0.5 * (a.lr - a.min_lr) * (1 + math.cos(math.pi * progress))

    generator = torch.Generator().manual_seed(a.seed)
    step = 0
    for epoch in range(1, a.epochs + 1):
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        loss_sum = 0.0
        for start in range(0, len(order), a.batch_size):
            rows = order[start:start + a.batch_size]
            images = shifted(train_x[rows], a.crop_padding, generator)
            for group in optimiser.param_groups:
                group["lr"] = lr_at(step)
            loss = F.cross_entropy(model(images), train_y[rows], label_smoothing=a.label_smoothing)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip_grad_norm)
            optimiser.step()
            loss_sum += loss.item() * len(rows)
            step += 1
        model.eval()
        hits = 0
        with torch.no_grad():
            for start in range(0, len(test_x), a.eval_batch_size):
                logits = model(test_x[start:start + a.eval_batch_size])
                hits += (logits.argmax(dim=1) == test_y[start:start + a.eval_batch_size]).sum().item()
        print(f"EPOCH epoch={epoch} test_top1={hits / len(test_x):.6f} train_loss={loss_sum / len(train_x):.6f} "
              f"elapsed_s={time.perf_counter() - START:.3f}", flush=True)


if __name__ == "__main__":
    main()
