"""Builds the embedded MNIST subset that `vit train` uses when no data set is given.

    python3 crates/vit-train/data/make_mnist_subset.py <DIR with the four MNIST IDX .gz files>

Writes to crates/vit-train/data/mnist-subset/:
- train-*: the first 1,000 training images of each digit (10,000 in all, file order kept);
- t10k-*:  the whole real MNIST test set (10,000 images), unchanged;
gzipped with no name or timestamp, so the output is byte-for-byte reproducible, and prints
the sha256 of every file (they are listed in vit-train's crate docs).
"""
import gzip
import hashlib
import os
import struct
import sys

PER_CLASS = 1000


def read(path):
    with gzip.open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as f:
            f.write(data)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    print(f"{os.path.basename(path)}  {os.path.getsize(path)} bytes  sha256 {digest}")


def main():
    src = sys.argv[1]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist-subset")
    os.makedirs(out, exist_ok=True)
    images = read(os.path.join(src, "train-images-idx3-ubyte.gz"))
    labels = read(os.path.join(src, "train-labels-idx1-ubyte.gz"))
    n, rows, cols = struct.unpack(">III", images[4:16])
    taken, keep = [0] * 10, []
    for i in range(n):
        c = labels[8 + i]
        if taken[c] < PER_CLASS:
            taken[c] += 1
            keep.append(i)
    size = rows * cols
    pixels = b"".join(images[16 + i * size:16 + (i + 1) * size] for i in keep)
    write(os.path.join(out, "train-images-idx3-ubyte.gz"),
          struct.pack(">IIII", 0x803, len(keep), rows, cols) + pixels)
    write(os.path.join(out, "train-labels-idx1-ubyte.gz"),
          struct.pack(">II", 0x801, len(keep)) + bytes(labels[8 + i] for i in keep))
    for name in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]:
        write(os.path.join(out, name + ".gz"), read(os.path.join(src, name + ".gz")))


if __name__ == "__main__":
    main()
