"""The test model: three safetensors files, 320 MiB in all, generated
deterministically (same seed, same bytes on every machine and run).

Several dtypes (f64, f32, f16, bf16, int64, int32, int8, uint8, bool), odd
sizes (so tensors start at unaligned offsets), a scalar, and one file name with
a space and a non-ASCII character, which reach the library verbatim in
`az://container/<name>`.

    python model.py OUT_DIR      writes the files and prints their names and sizes
"""

import hashlib
import json
import os
import struct
import sys

import numpy as np
import torch
from safetensors.torch import save_file

SEED = 20240604
MIB = 1 << 20

# file name -> [(tensor name, dtype, shape)]
LAYOUT = {
    "model-00001-of-00003.safetensors": [
        ("embed.weight", torch.float32, (8192, 2048)),  # 64 MiB
        ("layers.0.attn.qkv.weight", torch.float32, (6144, 2048)),  # 48 MiB
        ("layers.0.attn.qkv.bias", torch.float32, (6143,)),  # odd size
        ("layers.0.norm.weight", torch.float64, (2047,)),
        ("layers.0.scale", torch.float32, ()),  # a scalar
        ("layers.0.mlp.up.weight", torch.float32, (2048, 2047)),  # ~16 MiB
    ],
    "model-00002-of-00003.safetensors": [
        ("layers.1.attn.qkv.weight", torch.float16, (6144, 4096)),  # 48 MiB
        ("layers.1.mlp.up.weight", torch.bfloat16, (8192, 4096)),  # 64 MiB
        ("layers.1.mlp.down.weight", torch.bfloat16, (4095, 1023)),  # odd
        ("layers.1.norm.weight", torch.float16, (4097,)),
    ],
    # A space and a non-ASCII character in the name.
    "model 00003-of-00003 \u00fc.safetensors": [
        ("quant.weight", torch.int8, (16 << 20,)),  # 16 MiB
        ("quant.codes", torch.uint8, (12345, 1111)),  # ~13 MiB, odd
        ("quant.scales", torch.int32, (1 << 20,)),  # 4 MiB
        ("quant.index", torch.int64, (777777,)),  # ~6 MiB
        ("quant.mask", torch.bool, (3, 33333)),
        ("lm_head.weight", torch.bfloat16, (8192, 2048)),  # 32 MiB
    ],
}

_NUMPY_STORAGE = {
    torch.float64: np.float64,
    torch.float32: np.float32,
    torch.float16: np.float16,
    torch.bfloat16: np.uint16,  # raw bits, viewed as bfloat16 by torch
    torch.int64: np.int64,
    torch.int32: np.int32,
    torch.int8: np.int8,
    torch.uint8: np.uint8,
    torch.bool: np.uint8,
}


def _tensor(rng, dtype, shape):
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    itemsize = torch.empty((), dtype=dtype).element_size()
    raw = np.frombuffer(rng.bytes(n * itemsize), dtype=np.uint8)
    if dtype is torch.bool:
        raw = raw & 1  # only 0 and 1 are valid booleans
    arr = raw.view(_NUMPY_STORAGE[dtype]).reshape(shape)
    t = torch.from_numpy(arr.copy())
    if dtype is torch.bfloat16:
        t = t.view(torch.bfloat16)
    elif dtype is torch.bool:
        t = t.to(torch.bool)
    return t


def generate(out_dir):
    """Writes the model into out_dir; returns {file name: size in bytes}."""
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.Generator(np.random.PCG64(SEED))
    sizes = {}
    for fname, tensors in LAYOUT.items():
        data = {name: _tensor(rng, dtype, shape) for name, dtype, shape in tensors}
        path = os.path.join(out_dir, fname)
        tmp = path + ".tmp"
        save_file(data, tmp, metadata={"format": "pt"})
        os.replace(tmp, path)
        sizes[fname] = os.path.getsize(path)
    return sizes


def tensor_ranges(path):
    """{tensor name: (absolute offset, length)} from a safetensors file's header."""
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
    base = 8 + hlen
    return {
        name: (base + meta["data_offsets"][0], meta["data_offsets"][1] - meta["data_offsets"][0])
        for name, meta in header.items()
        if name != "__metadata__"
    }


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MIB), b""):
            h.update(chunk)
    return h.hexdigest()


if __name__ == "__main__":
    for name, size in generate(sys.argv[1]).items():
        print(f"{size:>12}  {name}")
