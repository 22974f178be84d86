#!/usr/bin/env python3
"""Generates tests/fixtures/io/: small .npy files written by NumPy and a .safetensors file
written by Hugging Face's safetensors library, used as independent references by tests/io.

    pip install numpy safetensors && python3 tools/gen_io_fixtures.py
"""
import os

import numpy as np
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "io")
os.makedirs(OUT, exist_ok=True)

# Values every test can recompute: v[i] = (i - 3) * 0.25 (exact in f16/bf16/f32/f64).
def ramp(n, dtype):
    return ((np.arange(n, dtype=np.float64) - 3) * 0.25).astype(dtype)

# .npy written by numpy.save (format 1.0, 64-byte aligned header)
np.save(os.path.join(OUT, "f4_2x3.npy"), ramp(6, np.float32).reshape(2, 3))
np.save(os.path.join(OUT, "f8_4.npy"), np.array([1.5, -2.0, 1e-300, np.pi], dtype=np.float64))
np.save(os.path.join(OUT, "f8_scalar.npy"), np.array(2.5, dtype=np.float64))
np.save(os.path.join(OUT, "f8_fortran_2x3.npy"),
        np.asfortranarray(ramp(6, np.float64).reshape(2, 3)))
np.save(os.path.join(OUT, "f8_big_endian_3.npy"), ramp(3, ">f8"))
with open(os.path.join(OUT, "f4_v2_2x2.npy"), "wb") as f:
    np.lib.format.write_array(f, ramp(4, np.float32).reshape(2, 2), version=(2, 0))
np.save(os.path.join(OUT, "i4_3.npy"), np.arange(3, dtype=np.int32))

# .safetensors written by the reference implementation
save_file(
    {
        "f32": ramp(6, np.float32).reshape(2, 3),
        "f16": ramp(4, np.float16),
        "f64": ramp(2, np.float64),
        "i64": np.array([-1, 2**40, 7], dtype=np.int64),
        "u8": np.array([0, 255, 7], dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "scalar": np.array(3.0, dtype=np.float32),
    },
    os.path.join(OUT, "reference.safetensors"),
    metadata={"format": "np", "note": "farsight io fixture"},
)
print("wrote", sorted(os.listdir(OUT)))
