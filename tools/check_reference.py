#!/usr/bin/env python3
"""Validate the layout of tests/fixtures/ref (no torch needed: numpy + json only).

Checks, per case listed in index.json: ref.json fields, logits.npy is an .npy v1.0 float64
C-order array of shape [rows, vocab] with rows = len(logits_positions or tokens), mean_nll and
token_nll/argmax are consistent with the stored logits (where all rows are stored), tokens are
in range, model.safetensors has HF tensor names with the declared dtype (no lm_head.weight when
tie_word_embeddings), and the fixture total stays small.

    python3 tools/check_reference.py [tests/fixtures/ref]
"""

import json
import struct
import sys
from pathlib import Path

import numpy as np

REQUIRED = ["case", "tokens", "weights_dtype", "model_dir", "mean_nll", "transformers_version",
            "torch_version", "device", "notes"]
MAX_TOTAL_BYTES = 8_500_000


def read_npy_v1(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    assert raw[:6] == b"\x93NUMPY", f"{path}: not an .npy file"
    assert raw[6:8] == b"\x01\x00", f"{path}: .npy version {raw[6]}.{raw[7]}, want 1.0"
    hlen = struct.unpack("<H", raw[8:10])[0]
    header = raw[10 : 10 + hlen].decode("latin1")
    assert "'descr': '<f8'" in header and "'fortran_order': False" in header, header
    return np.load(path, allow_pickle=False)


def safetensors_header(path: Path) -> dict:
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def check_case(cdir: Path) -> None:
    ref = json.loads((cdir / "ref.json").read_text())
    for k in REQUIRED:
        assert k in ref, f"{cdir.name}: ref.json lacks {k}"
    tokens = ref["tokens"]
    cfg = json.loads((cdir / "config.json").read_text())
    vocab = cfg["vocab_size"]
    assert all(0 <= t < vocab for t in tokens), f"{cdir.name}: token out of range"
    if ref.get("logits_file"):
        lg = read_npy_v1(cdir / ref["logits_file"])
        pos = ref.get("logits_positions")
        rows = list(range(len(tokens))) if pos is None else pos
        assert lg.shape == (len(rows), vocab), (cdir.name, lg.shape)
        assert np.isfinite(lg).all()
        if pos is None:
            lp = log_softmax(lg[:-1])
            nll = -lp[np.arange(len(tokens) - 1), tokens[1:]]
            assert abs(nll.mean() - ref["mean_nll"]) < 1e-9, (cdir.name, nll.mean(), ref["mean_nll"])
            assert np.allclose(nll, ref["token_nll"], rtol=0, atol=1e-9)
            assert list(lg.argmax(-1)) == ref["argmax"]
        else:
            assert [ref["argmax"][p] for p in pos] == list(lg.argmax(-1))
        for ex in ref.get("extra_logits", []):
            e = read_npy_v1(cdir / ex["file"])
            assert e.shape == (ex["n_tokens"], vocab), (ex["file"], e.shape)
    st = cdir / "model.safetensors"
    if ref["model_dir"] is None:
        hdr = safetensors_header(st)
        want = {"float32": "F32", "bfloat16": "BF16"}[ref["weights_dtype"]]
        names = [k for k in hdr if k != "__metadata__"]
        assert all(hdr[k]["dtype"] == want for k in names), cdir.name
        assert "model.embed_tokens.weight" in names
        assert ("lm_head.weight" in names) != bool(cfg.get("tie_word_embeddings")), cdir.name
        assert cfg.get("dtype", cfg.get("torch_dtype")) == ref["weights_dtype"], cdir.name
    else:
        assert not st.exists(), f"{cdir.name}: real models must not be copied"


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "tests/fixtures/ref")
    index = json.loads((root / "index.json").read_text())
    for c in index["cases"]:
        check_case(root / c["dir"])
        print(f"ok  {c['name']}")
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    print(f"total {total / 1e6:.2f} MB in {len(index['cases'])} cases")
    assert total <= MAX_TOTAL_BYTES, "fixtures too large"
    return 0


if __name__ == "__main__":
    sys.exit(main())
