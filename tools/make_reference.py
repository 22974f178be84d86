#!/usr/bin/env python3
"""Generate Hugging Face transformers reference fixtures for farsight.

Creates small random-weight Llama-family models (Llama, Qwen2, Mistral; several RoPE scaling
types) plus float64 reference logits computed by transformers itself, and float64 reference
logits / NLLs for the two real models in ../shared/models (read in place, never copied).

Usage (repository root):
    python3 tools/make_reference.py --out tests/fixtures/ref
    python3 tools/make_reference.py --out tests/fixtures/ref --cases rope_yarn,stories260K
    python3 tools/make_reference.py --out tests/fixtures/ref --long      # + docs27M_long

Works offline (HF_HUB_OFFLINE=1): every model is built from a config object or loaded from a
local folder, never from a hub id.

Per case the output folder holds:
    config.json          as config.save_pretrained writes it (+ config_legacy.json for some)
    model.safetensors    as save_pretrained writes it (random cases only)
    logits.npy           float64 [n_rows, vocab], C order, .npy v1.0 (rows = logits_positions)
    ref.json             tokens, mean NLL, versions, notes, per-position NLL/argmax, ...
and <out>/index.json lists the cases.

Reference forward: AutoModelForCausalLM.from_pretrained(<the files written>, dtype=float64,
attn_implementation="eager"), eval mode, one forward over the whole sequence, no cache.
NOTE: transformers keeps a few float32 islands even in a float64 model (RMSNorm normalises in
float32, eager softmax runs in float32, RoPE inv_freq/cos/sin are computed in float32); the
logits are exactly what transformers produces. ref.json["f32_islands_effect"] reports how far
they are from an all-float64 forward (see docs/rope.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

REPO = Path(__file__).resolve().parent.parent
SEQ_LEN = 200

ARCHS = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
}

# --------------------------------------------------------------------------------------------
# Case definitions
# --------------------------------------------------------------------------------------------

_SMALL = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, max_position_embeddings=256)
_ROPE = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=32,
    rms_norm_eps=1e-5,
)
_LONGROPE_SHORT = [1.0 + 0.05 * i for i in range(16)]  # 1.00 .. 1.75, distinct
_LONGROPE_LONG = [1.0 + 0.6 * i + 0.01 * i * i for i in range(16)]  # 1.00 .. 12.25, distinct

CASES: list[dict] = [
    dict(
        name="llama_gqa",
        arch="llama",
        seed=101,
        dtype="float32",
        cfg=dict(
            _SMALL,
            intermediate_size=96,
            num_attention_heads=8,
            num_key_value_heads=2,
            head_dim=16,
            rms_norm_eps=1e-5,
        ),
        notes="GQA 8q/2kv heads, explicit head_dim 16: q width 128 != hidden 64.",
    ),
    dict(
        name="llama_gqa_bf16",
        arch="llama",
        seed=102,
        dtype="bfloat16",
        cfg=dict(
            _SMALL,
            intermediate_size=96,
            num_attention_heads=8,
            num_key_value_heads=2,
            head_dim=16,
            rms_norm_eps=1e-5,
        ),
        notes=(
            "Same architecture as llama_gqa, weights stored in bfloat16. logits.npy: float64 "
            "forward of exactly these bf16 weights upcast to float64. logits_bf16_torch.npy: the "
            "same model run by transformers in torch.bfloat16 (information only; stored as float64)."
        ),
    ),
    dict(
        name="llama_tied_mha",
        arch="llama",
        seed=103,
        dtype="float32",
        cfg=dict(
            _SMALL,
            vocab_size=160,
            intermediate_size=96,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=4,
            tie_word_embeddings=True,
        ),
        notes=(
            "tie_word_embeddings=true (no lm_head.weight in the file; logits use "
            "model.embed_tokens.weight), MHA 4/4 heads, head_dim implicit (64/4=16), 3 layers, "
            "vocab 160, rms_norm_eps default 1e-6."
        ),
    ),
    dict(
        name="llama_mqa_bias",
        arch="llama",
        seed=104,
        dtype="float32",
        cfg=dict(
            _SMALL,
            intermediate_size=96,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=16,
            attention_bias=True,
            mlp_bias=True,
            rms_norm_eps=1e-5,
        ),
        notes="MQA (1 kv head), attention_bias=true (q/k/v/o biases), mlp_bias=true (gate/up/down biases).",
    ),
    dict(
        name="qwen2_bias",
        arch="qwen2",
        seed=105,
        dtype="float32",
        cfg=dict(
            _SMALL,
            intermediate_size=96,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        notes="Qwen2ForCausalLM: q/k/v biases, no o_proj bias, GQA 4/2, rope_theta 1e6, eps 1e-6.",
    ),
    dict(
        name="mistral_swa",
        arch="mistral",
        seed=106,
        dtype="float32",
        cfg=dict(
            _SMALL,
            intermediate_size=96,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            sliding_window=48,
            rms_norm_eps=1e-5,
        ),
        notes="",  # filled in by the sliding-window check
    ),
    dict(
        name="rope_theta500k",
        arch="llama",
        seed=201,
        dtype="float32",
        cfg=dict(
            _ROPE,
            max_position_embeddings=256,
            rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        ),
        notes="Default RoPE with rope_theta 500000, head_dim 32.",
    ),
    dict(
        name="rope_linear",
        arch="llama",
        seed=202,
        dtype="float32",
        cfg=dict(
            _ROPE,
            max_position_embeddings=256,
            rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0},
        ),
        legacy=[("config_legacy.json", "type")],
        notes="Linear (position interpolation) factor 4: inv_freq / 4.",
    ),
    dict(
        name="rope_dynamic",
        arch="llama",
        seed=203,
        dtype="float32",
        cfg=dict(
            _ROPE,
            max_position_embeddings=64,
            rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0},
        ),
        legacy=[("config_legacy.json", "type")],
        prefix_logits=48,
        notes=(
            "Dynamic NTK factor 2, max_position_embeddings 64. The 200-token forward recomputes "
            "inv_freq with seq_len = max(position_ids)+1 = 200 (base' = base * (factor*200/64 - "
            "(factor-1))^(d/(d-2)), computed in float32). logits_prefix48.npy: a separate forward "
            "over tokens[:48] only (seq_len 48 <= 64: plain RoPE)."
        ),
    ),
    dict(
        name="rope_yarn",
        arch="llama",
        seed=204,
        dtype="float32",
        cfg=dict(
            _ROPE,
            max_position_embeddings=256,
            rope_parameters={
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 64,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "rope_theta": 10000.0,
            },
        ),
        legacy=[("config_legacy.json", "rope_type")],
        notes="YaRN factor 4, original 64, beta_fast 32, beta_slow 1, truncate default (true), attention_factor default 0.1*ln(4)+1.",
    ),
    dict(
        name="rope_yarn_attn",
        arch="llama",
        seed=205,
        dtype="float32",
        cfg=dict(
            _ROPE,
            max_position_embeddings=256,
            rope_parameters={
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 64,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "attention_factor": 1.25,
                "rope_theta": 10000.0,
            },
        ),
        notes="YaRN as rope_yarn but explicit attention_factor 1.25 (multiplies cos and sin).",
    ),
    dict(
        name="rope_llama3",
        arch="llama",
        seed=206,
        dtype="float32",
        cfg=dict(
            _ROPE,
            max_position_embeddings=512,
            rope_parameters={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
                "rope_theta": 10000.0,
            },
        ),
        legacy=[("config_legacy.json", "rope_type")],
        notes="Llama 3.1 scaling factor 8, low 1, high 4, original 64: wavelengths < 16 kept, > 64 divided by 8, between smoothed.",
    ),
    dict(
        name="rope_longrope",
        arch="llama",
        seed=207,
        dtype="float32",
        cfg=dict(
            _ROPE,
            max_position_embeddings=256,
            rope_parameters={
                "rope_type": "longrope",
                "short_factor": _LONGROPE_SHORT,
                "long_factor": _LONGROPE_LONG,
                "original_max_position_embeddings": 64,
                "rope_theta": 10000.0,
            },
        ),
        prefix_logits=48,
        notes=(
            "LongRoPE, no explicit factor => factor = max_position_embeddings/original = 4, "
            "attention_factor = sqrt(1 + ln(4)/ln(64)). The 200-token forward uses long_factor "
            "(seq_len 200 > 64). logits_prefix48.npy: a separate forward over tokens[:48] "
            "(short_factor; same attention_factor)."
        ),
    ),
]

STORY_SENTENCE = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
    "park with her dog Max. One day, Lily found a shiny red ball under a big tree. She was so "
    "happy that she ran home to show her mom."
)

PPL_PARAGRAPH = (
    "Once upon a time, in a small town near a big green forest, there lived a boy named Tim. "
    "Tim had a red hat and a little brown dog called Spot. Every morning, Tim and Spot walked "
    "to the park to play. They liked to run on the grass and look at the birds in the trees. "
    "One sunny day, Tim saw a small box under a bench. The box was blue and it had a yellow "
    "bow on top. Tim wanted to open it, but he was a little scared. He asked Spot, \"Should "
    "we open the box?\" Spot wagged his tail and barked. Tim smiled and opened the box. "
    "Inside, there was a shiny key and a note. The note said, \"This key opens the door to "
    "the garden.\" Tim looked around the park and saw an old wall with a tiny door. He put "
    "the key in the lock and the door opened slowly. Behind it was a beautiful garden with "
    "many flowers and a tall tree full of apples. Tim and Spot played in the garden all day. "
    "When the sun went down, Tim went home and told his mom about the magic garden. His mom "
    "hugged him and smiled."
)

TECH_SENTENCE = (
    "The kernel scheduler assigns each runnable task to a CPU run queue, and the Python "
    "interpreter releases the global interpreter lock while it waits for I/O. "
)

# Templates for the long synthetic technical text (docs27M_long). Slots are filled from the
# word lists below with a seeded RNG, so the text varies but stays in-domain.
TECH_TEMPLATES = [
    "The {mod} module provides functions for working with {thing}.",
    "Call {func}() to {verb} the {thing} before the {event}.",
    "If the {thing} is not available, {func}() raises {exc}.",
    "The kernel keeps a list of {thing} for each {owner}, protected by a spinlock.",
    "When a {owner} exits, the kernel releases its {thing} and wakes up any waiters.",
    "The return value is the number of {thing} that were {verbed}, or -1 on error.",
    "See the documentation of {mod} for details about {thing}.",
    "This function is not thread-safe; use a lock when several threads {verb} the same {thing}.",
    "The default value of the {param} parameter is {num}.",
    "Set {param} to {num} to {verb} the {thing} in batches.",
    "In Python, {func}() returns a new {pytype} that contains the {thing}.",
    "The driver registers a callback that is called after each {event}.",
    "Changed in version 3.{minor}: the {param} parameter was added.",
    "A {pytype} object is immutable, so {func}() always returns a copy.",
    "The {owner} must hold the lock while it modifies the {thing}.",
    "Use {func}() instead of {func2}() when the {thing} may be large.",
]
TECH_WORDS = dict(
    mod=["os", "sys", "io", "struct", "socket", "threading", "asyncio", "pathlib", "json", "re"],
    thing=["file descriptors", "pages", "buffers", "sockets", "timers", "memory regions",
           "interrupts", "path names", "strings", "bytes objects", "work items", "inodes"],
    func=["open", "read", "write", "close", "mmap", "flush", "select", "poll", "encode",
          "decode", "kmalloc", "schedule", "copy_from_user", "wait_event"],
    func2=["readline", "readall", "vmalloc", "sendfile", "copy", "splice"],
    verb=["allocate", "free", "map", "flush", "lock", "update", "read", "write", "queue"],
    verbed=["allocated", "freed", "mapped", "flushed", "written", "read", "queued"],
    event=["interrupt", "context switch", "system call", "page fault", "timeout", "reboot"],
    exc=["OSError", "ValueError", "TypeError", "KeyError", "RuntimeError", "-EINVAL"],
    owner=["process", "thread", "device", "task", "CPU", "namespace"],
    param=["timeout", "flags", "mode", "buffering", "encoding", "size", "offset"],
    num=["0", "1", "4096", "None", "-1", "64", "1024"],
    pytype=["list", "tuple", "dict", "str", "bytes", "memoryview"],
    minor=["8", "9", "10", "11", "12", "13"],
)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def versions() -> dict:
    return {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
    }


def save_npy(path: Path, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    with open(path, "wb") as f:
        np.lib.format.write_array(f, arr, version=(1, 0), allow_pickle=False)


def init_weights(model: torch.nn.Module, seed: int, lm_head_gain: float) -> None:
    """Deterministic random weights, generated on the CPU in float64 and cast to the model dtype.

    Linear weights ~ N(0, 1/fan_in) (lm_head: N(0, gain^2/fan_in), so logits have std ~gain),
    embeddings ~ N(0, 1) (tied: N(0, gain^2/hidden), since they are also the lm_head), RMSNorm
    weights 1 + 0.1 N(0, 1), biases 0.1 N(0, 1)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied lm_head is not listed separately
            shape = tuple(p.shape)
            z = torch.randn(shape, generator=g, dtype=torch.float64)
            if name.endswith("norm.weight"):
                v = 1.0 + 0.1 * z
            elif name.endswith(".bias"):
                v = 0.1 * z
            elif "embed_tokens" in name:
                v = z * (lm_head_gain / math.sqrt(shape[1])) if tied else z
            elif name.endswith(".weight") and len(shape) == 2:
                fan_in = shape[1]
                gain = lm_head_gain if name.startswith("lm_head") else 1.0
                v = z * (gain / math.sqrt(fan_in))
            else:
                raise RuntimeError(f"no init rule for parameter {name} {shape}")
            p.copy_(v.to(p.dtype))


def load_f64(model_dir: Path, device: str, config=None, dtype=torch.float64):
    kw = dict(dtype=dtype, attn_implementation="eager")
    if config is not None:
        kw["config"] = config
    m = AutoModelForCausalLM.from_pretrained(str(model_dir), **kw)
    return m.to(device).eval()


@torch.no_grad()
def forward_logits(model, tokens: list[int], device: str) -> torch.Tensor:
    ids = torch.tensor([tokens], dtype=torch.long, device=device)
    out = model(input_ids=ids, use_cache=False)
    return out.logits[0].detach().to("cpu", torch.float64)


def nll_stats(logits: torch.Tensor, tokens: list[int]) -> tuple[float, list[float]]:
    """Mean NLL of tokens[1:] given prefixes (float64), and the per-position values."""
    logp = torch.log_softmax(logits[:-1].to(torch.float64), dim=-1)
    tgt = torch.tensor(tokens[1:], dtype=torch.long)
    nll = -logp.gather(1, tgt[:, None])[:, 0]
    return float(nll.mean()), [float(x) for x in nll]


def logit_stats(logits: torch.Tensor) -> dict:
    top2 = torch.topk(logits, 2, dim=-1).values
    gap = (top2[:, 0] - top2[:, 1]).numpy()
    return {
        "logits_std": float(logits.std()),
        "logits_abs_max": float(logits.abs().max()),
        "top12_gap_min": float(gap.min()),
        "top12_gap_median": float(np.median(gap)),
        "top12_gap_frac_below_1e-3": float((gap < 1e-3).mean()),
    }


def print_stats(name: str, st: dict, mean_nll: float) -> None:
    print(
        f"  {name:16s} std {st['logits_std']:6.3f}  |max| {st['logits_abs_max']:7.3f}  "
        f"gap min {st['top12_gap_min']:.2e} median {st['top12_gap_median']:.3f}  "
        f"frac(gap<1e-3) {st['top12_gap_frac_below_1e-3']:.3f}  mean_nll {mean_nll:.4f}"
    )


def rope_info(model) -> dict:
    re_ = model.model.rotary_emb
    inv = re_.inv_freq.detach().to("cpu")
    return {
        "rope_type": re_.rope_type,
        "inv_freq_dtype": str(inv.dtype).replace("torch.", ""),
        "inv_freq": [float(x) for x in inv.to(torch.float64)],
        "attention_scaling": float(re_.attention_scaling),
    }


def legacy_config(cfg_dict: dict, key: str) -> dict:
    """The same config in the pre-5.x spelling: rope_scaling (+ type or rope_type) + rope_theta."""
    d = copy.deepcopy(cfg_dict)
    rp = dict(d.pop("rope_parameters"))
    theta = rp.pop("rope_theta")
    rtype = rp.pop("rope_type")
    scaling = {key: rtype}
    scaling.update(rp)
    d["rope_scaling"] = scaling
    d["rope_theta"] = theta
    d["transformers_version"] = "4.46.0"  # legacy spelling as written by 4.x
    return d


def write_json(path: Path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


# --------------------------------------------------------------------------------------------
# Float64-everywhere forward (to measure the effect of transformers' float32 islands)
# --------------------------------------------------------------------------------------------


def _inv_freq_f64(cfg, seq_len: int) -> tuple[torch.Tensor, float]:
    """Independent float64 implementation of transformers' RoPE parameter functions."""
    rp = cfg.rope_parameters
    rtype = rp.get("rope_type", "default")
    base = float(rp["rope_theta"])
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    i = torch.arange(0, d, 2, dtype=torch.float64)
    pos_freqs = base ** (i / d)
    inv = 1.0 / pos_freqs
    att = 1.0
    if rtype == "default":
        pass
    elif rtype == "linear":
        inv = inv / rp["factor"]
    elif rtype == "dynamic":
        mp = cfg.max_position_embeddings
        L = max(seq_len, mp)
        b = base * ((rp["factor"] * L / mp) - (rp["factor"] - 1)) ** (d / (d - 2))
        inv = 1.0 / (b ** (i / d))
    elif rtype == "yarn":
        f = rp["factor"]
        om = rp["original_max_position_embeddings"]
        att = rp.get("attention_factor")
        if att is None:
            att = 0.1 * math.log(f) + 1.0 if f > 1 else 1.0
        bf, bs = rp.get("beta_fast") or 32, rp.get("beta_slow") or 1

        def cdim(rot):
            return (d * math.log(om / (rot * 2 * math.pi))) / (2 * math.log(base))

        lo, hi = cdim(bf), cdim(bs)
        if rp.get("truncate", True):
            lo, hi = math.floor(lo), math.ceil(hi)
        lo, hi = max(lo, 0), min(hi, d - 1)
        if lo == hi:
            hi += 0.001
        ramp = ((torch.arange(d // 2, dtype=torch.float64) - lo) / (hi - lo)).clamp(0, 1)
        extra = 1 - ramp
        inv = (1.0 / (f * pos_freqs)) * (1 - extra) + (1.0 / pos_freqs) * extra
    elif rtype == "llama3":
        f, lf, hf = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
        om = rp["original_max_position_embeddings"]
        wl = 2 * math.pi / inv
        out = torch.where(wl > om / lf, inv / f, inv)
        smooth = (om / wl - lf) / (hf - lf)
        mid = (wl >= om / hf) & (wl <= om / lf)
        inv = torch.where(mid, (1 - smooth) * inv / f + smooth * inv, out)
    elif rtype == "longrope":
        om = rp["original_max_position_embeddings"]
        f = rp.get("factor") or cfg.max_position_embeddings / om
        att = rp.get("attention_factor")
        if att is None:
            att = 1.0 if f <= 1 else math.sqrt(1 + math.log(f) / math.log(om))
        ext = rp["long_factor"] if seq_len > om else rp["short_factor"]
        inv = 1.0 / (torch.tensor(ext, dtype=torch.float64) * pos_freqs)
    else:
        raise RuntimeError(f"unknown rope_type {rtype}")
    return inv, float(att)


class _F64Everywhere:
    """Context manager: RMSNorm, eager softmax and RoPE cos/sin all in float64."""

    def __init__(self, model, cfg, seq_len: int):
        self.model, self.cfg, self.seq_len = model, cfg, seq_len
        self.saved = []

    def __enter__(self):
        import importlib

        mod = importlib.import_module(type(self.model).__module__)

        def rms_forward(norm, x):
            var = x.pow(2).mean(-1, keepdim=True)
            return norm.weight * (x * torch.rsqrt(var + norm.variance_epsilon))

        def eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
            n_rep = module.num_key_value_groups
            k = mod.repeat_kv(key, n_rep)
            v = mod.repeat_kv(value, n_rep)
            w = torch.matmul(query, k.transpose(2, 3)) * scaling
            if attention_mask is not None:
                w = w + attention_mask
            w = torch.softmax(w, dim=-1)
            o = torch.matmul(w, v).transpose(1, 2).contiguous()
            return o, w

        inv, att = _inv_freq_f64(self.cfg, self.seq_len)

        def rope_forward(re_, x, position_ids):
            pos = position_ids[:, None, :].to(torch.float64)
            freqs = (inv.to(x.device)[None, :, None] @ pos).transpose(1, 2)
            emb = torch.cat((freqs, freqs), dim=-1)
            return (emb.cos() * att).to(x.dtype), (emb.sin() * att).to(x.dtype)

        for m in self.model.modules():
            cls = type(m).__name__
            if cls.endswith("RMSNorm"):
                self._patch(m, "forward", rms_forward.__get__(m))
            elif cls.endswith("RotaryEmbedding"):
                self._patch(m, "forward", rope_forward.__get__(m))
        self.saved.append((mod, "eager_attention_forward", mod.eager_attention_forward))
        mod.eager_attention_forward = eager
        return self

    def _patch(self, obj, attr, fn):
        self.saved.append((obj, attr, None))
        setattr(obj, attr, fn)

    def __exit__(self, *exc):
        for obj, attr, old in reversed(self.saved):
            if old is None:
                delattr(obj, attr)
            else:
                setattr(obj, attr, old)
        return False


def f64_effect(model, cfg, tokens, logits_hf, device) -> dict:
    with _F64Everywhere(model, cfg, len(tokens)):
        pure = forward_logits(model, tokens, device)
    diff = (pure - logits_hf).abs()
    # The float32 islands move logits by ~1e-6; anything large means the script's own RoPE
    # formulas (documented in docs/rope.md) disagree with transformers.
    assert float(diff.max()) < 1e-4, f"all-float64 forward differs by {float(diff.max())}"
    return {
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float(diff.max() / logits_hf.abs().max()),
        "argmax_equal": bool(torch.equal(pure.argmax(-1), logits_hf.argmax(-1))),
    }


# --------------------------------------------------------------------------------------------
# Random-weight cases
# --------------------------------------------------------------------------------------------


def make_random_case(case: dict, out: Path, device: str, lm_head_gain: float) -> dict:
    name = case["name"]
    cdir = out / name
    if cdir.exists():
        shutil.rmtree(cdir)
    cdir.mkdir(parents=True)
    cfg_cls, model_cls = ARCHS[case["arch"]]
    cfg = cfg_cls(**copy.deepcopy(case["cfg"]))
    torch.manual_seed(case["seed"])
    model = model_cls(cfg).to(torch.float32)
    init_weights(model, case["seed"], lm_head_gain)
    if case["dtype"] == "bfloat16":
        model = model.to(torch.bfloat16)
    model.save_pretrained(str(cdir))
    gen = cdir / "generation_config.json"
    if gen.exists():
        gen.unlink()
    del model

    g = torch.Generator(device="cpu").manual_seed(case["seed"] + 1_000_000)
    tokens = torch.randint(0, cfg.vocab_size, (SEQ_LEN,), generator=g).tolist()

    ref_model = load_f64(cdir, device)
    logits = forward_logits(ref_model, tokens, device)
    mean_nll, tok_nll = nll_stats(logits, tokens)
    st = logit_stats(logits)
    print_stats(name, st, mean_nll)
    save_npy(cdir / "logits.npy", logits.numpy())
    saved_cfg = json.loads((cdir / "config.json").read_text())

    ref = {
        "case": name,
        "architecture": saved_cfg["architectures"][0],
        "tokens": tokens,
        "n_tokens": len(tokens),
        "vocab_size": cfg.vocab_size,
        "weights_dtype": case["dtype"],
        "model_dir": None,
        "logits_file": "logits.npy",
        "logits_positions": None,
        "mean_nll": mean_nll,
        **versions(),
        "device": device,
        "seed": case["seed"],
        "notes": case["notes"],
        "stats": st,
        "argmax": [int(x) for x in logits.argmax(-1)],
        "token_nll": tok_nll,
    }
    if hasattr(ref_model.model, "rotary_emb"):
        ref["rope"] = rope_info(ref_model)  # as used by the 200-token forward

    ref["f32_islands_effect"] = f64_effect(ref_model, ref_model.config, tokens, logits, device)

    extra = []
    if case.get("prefix_logits"):
        n = case["prefix_logits"]
        m2 = load_f64(cdir, device)  # fresh model: dynamic/longrope state must not carry over
        lp = forward_logits(m2, tokens[:n], device)
        save_npy(cdir / f"logits_prefix{n}.npy", lp.numpy())
        nll_p, _ = nll_stats(lp, tokens[:n])
        extra.append(
            {
                "file": f"logits_prefix{n}.npy",
                "tokens": f"tokens[:{n}]",
                "n_tokens": n,
                "mean_nll": nll_p,
                "rope": rope_info(m2),
                "max_abs_diff_vs_full_forward_rows": float((lp - logits[:n]).abs().max()),
                "note": "separate single forward over the first n tokens only",
            }
        )
        print(f"    prefix{n}: max |diff| vs full-forward rows {extra[-1]['max_abs_diff_vs_full_forward_rows']:.3e}")

    if case["dtype"] == "bfloat16":
        mb = load_f64(cdir, device, dtype=torch.bfloat16)
        lb = forward_logits(mb, tokens, device)
        save_npy(cdir / "logits_bf16_torch.npy", lb.numpy())
        d = (lb - logits).abs()
        extra.append(
            {
                "file": "logits_bf16_torch.npy",
                "tokens": "tokens",
                "n_tokens": len(tokens),
                "note": "transformers forward in torch.bfloat16 (information only)",
                "max_abs_diff_vs_f64": float(d.max()),
                "mean_abs_diff_vs_f64": float(d.mean()),
                "argmax_agreement": float((lb.argmax(-1) == logits.argmax(-1)).double().mean()),
            }
        )
        print(f"    bf16 torch: max |diff| {d.max():.3f}, argmax agreement {extra[-1]['argmax_agreement']:.3f}")

    if case["arch"] == "mistral":
        ref["notes"] = check_sliding_window(cdir, tokens, logits, device, cfg.sliding_window)
        print("    " + ref["notes"])

    for fname, key in case.get("legacy", []):
        leg = legacy_config(saved_cfg, key)
        write_json(cdir / fname, leg)
        check_legacy(cdir, fname, tokens, logits, device, ref_model.config)
        print(f"    {fname} ({key}): same rope_parameters and bit-identical logits")
    if extra:
        ref["extra_logits"] = extra
    write_json(cdir / "ref.json", ref)
    return {"name": name, "dir": name, "architecture": ref["architecture"], "weights_dtype": case["dtype"]}


def check_sliding_window(cdir: Path, tokens, logits, device, window: int) -> str:
    cfg = AutoConfig.from_pretrained(str(cdir))
    cfg.sliding_window = None
    full = forward_logits(load_f64(cdir, device, config=cfg), tokens, device)
    d = (full - logits).abs().amax(-1)
    first = int(torch.nonzero(d > 0)[0, 0]) if bool((d > 0).any()) else -1
    assert first == window, f"sliding window not applied as expected: first differing row {first}"
    assert float(d[window:].min()) > 1e-6, "some rows past the window do not differ"
    return (
        f"MistralForCausalLM, GQA 4/2, sliding_window {window}. Checked: eager attention applies "
        f"the window: compared with sliding_window=None the logits are bit-identical for "
        f"positions 0..{window - 1} and differ from position {window} on (min row max|diff| past "
        f"the window {float(d[window:].min()):.3g}). Window definition (masking_utils."
        f"sliding_window_overlay): query i sees keys j with i - {window} < j <= i, i.e. the "
        f"{window} most recent keys including itself."
    )


def check_legacy(cdir: Path, fname: str, tokens, logits, device, cfg_new) -> None:
    with tempfile.TemporaryDirectory() as td:
        shutil.copy(cdir / fname, Path(td) / "config.json")
        shutil.copy(cdir / "model.safetensors", Path(td) / "model.safetensors")
        m = load_f64(Path(td), device)
        rp_old = {k: v for k, v in m.config.rope_parameters.items() if k != "type"}
        assert rp_old == cfg_new.rope_parameters, (rp_old, cfg_new.rope_parameters)
        lg = forward_logits(m, tokens, device)
    assert torch.equal(lg, logits), f"{fname}: logits differ from config.json's"


# --------------------------------------------------------------------------------------------
# Real models
# --------------------------------------------------------------------------------------------


def rel_to_repo(p: Path) -> str:
    return os.path.relpath(p.resolve(), REPO)


def shared_rel(p: Path) -> str | None:
    parts = p.resolve().parts
    return "/".join(parts[parts.index("shared") + 1 :]) if "shared" in parts else None


def make_stories(out: Path, model_dir: Path, device: str) -> dict:
    name = "stories260K"
    cdir = out / name
    if cdir.exists():
        shutil.rmtree(cdir)
    cdir.mkdir(parents=True)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tok(STORY_SENTENCE)["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) >= 64, (len(ids), ids[:3])
    tokens = ids[:64]
    model = load_f64(model_dir, device)
    logits = forward_logits(model, tokens, device)
    mean_nll, tok_nll = nll_stats(logits, tokens)
    st = logit_stats(logits)
    print_stats(name, st, mean_nll)
    save_npy(cdir / "logits.npy", logits.numpy())
    # (the model's config.json stays in shared/; nothing from shared/ is copied)

    # Cross-check with the independent golden in shared/testdata (BOS logits, llama2.c-derived).
    golden_note = ""
    gpath = model_dir.parent.parent / "testdata" / "stories260K_golden.json"
    if gpath.exists():
        gold = json.loads(gpath.read_text())
        g0 = torch.tensor(gold["logits_bos_pos0"], dtype=torch.float64)
        d0 = float((g0 - logits[0]).abs().max())
        golden_note = f" Position-0 logits agree with testdata/stories260K_golden.json to {d0:.2e}."
        print(f"    golden BOS logits max |diff| {d0:.2e}")
        assert d0 < 1e-4

    ptoks = tok(PPL_PARAGRAPH)["input_ids"]
    assert len(ptoks) <= model.config.max_position_embeddings, len(ptoks)
    pl = forward_logits(model, ptoks, device)
    p_nll, _ = nll_stats(pl, ptoks)
    print(f"    perplexity text: {len(PPL_PARAGRAPH.split())} words, {len(ptoks)} tokens, mean NLL {p_nll:.5f}, ppl {math.exp(p_nll):.4f}")

    ref = {
        "case": name,
        "architecture": "LlamaForCausalLM",
        "tokens": tokens,
        "n_tokens": len(tokens),
        "vocab_size": model.config.vocab_size,
        "weights_dtype": "float32",
        "model_dir": rel_to_repo(model_dir),
        "model_dir_in_shared": shared_rel(model_dir),
        "logits_file": "logits.npy",
        "logits_positions": None,
        "mean_nll": mean_nll,
        **versions(),
        "device": device,
        "text": STORY_SENTENCE,
        "text_note": "tokens = tokenizer(text) (BOS added by the tokenizer) truncated to 64",
        "notes": "Real model from shared/, float64 forward of its float32 weights; the config is the model's own in shared/" + golden_note,
        "stats": st,
        "argmax": [int(x) for x in logits.argmax(-1)],
        "token_nll": tok_nll,
        "f32_islands_effect": f64_effect(model, model.config, tokens, logits, device),
        "perplexity": {
            "text": PPL_PARAGRAPH,
            "tokens": ptoks,
            "n_tokens": len(ptoks),
            "bos_added": ptoks[0] == tok.bos_token_id,
            "mean_nll": p_nll,
            "ppl": math.exp(p_nll),
            "note": "one window over the whole sequence; NLL of tokens[1:] given prefixes; ppl = exp(mean_nll)",
        },
    }
    write_json(cdir / "ref.json", ref)
    return {"name": name, "dir": name, "architecture": "LlamaForCausalLM", "weights_dtype": "float32"}


DOCS_LOGIT_STRIDE = 16  # 128 x 8192 float64 logits would be 8.4 MB; keep every 16th row


def make_docs(out: Path, model_dir: Path, device: str) -> dict:
    name = "docs27M"
    cdir = out / name
    if cdir.exists():
        shutil.rmtree(cdir)
    cdir.mkdir(parents=True)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tok(TECH_SENTENCE * 8)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id and len(ids) >= 128
    tokens = ids[:128]
    model = load_f64(model_dir, device)
    logits = forward_logits(model, tokens, device)
    mean_nll, tok_nll = nll_stats(logits, tokens)
    st = logit_stats(logits)
    print_stats(name, st, mean_nll)
    positions = list(range(0, len(tokens), DOCS_LOGIT_STRIDE))
    save_npy(cdir / "logits.npy", logits[positions].numpy())
    # (the model's config.json stays in shared/)
    ref = {
        "case": name,
        "architecture": "LlamaForCausalLM",
        "tokens": tokens,
        "n_tokens": len(tokens),
        "vocab_size": model.config.vocab_size,
        "weights_dtype": "bfloat16",
        "model_dir": rel_to_repo(model_dir),
        "model_dir_in_shared": shared_rel(model_dir),
        "logits_file": "logits.npy",
        "logits_positions": positions,
        "mean_nll": mean_nll,
        **versions(),
        "device": device,
        "text": TECH_SENTENCE * 8,
        "text_note": "tokens = tokenizer(text) (BOS <|begin_of_text|>=0 added by the tokenizer) truncated to 128",
        "notes": (
            "Real model from shared/ (bf16, 4 shards), float64 forward of its bf16 weights upcast. "
            f"To keep the fixture small logits.npy holds only the rows listed in logits_positions "
            f"(every {DOCS_LOGIT_STRIDE}th position, shape [{len(positions)}, {model.config.vocab_size}]); "
            "token_nll/argmax cover every position. The config is the model's own in shared/"
        ),
        "stats": st,
        "argmax": [int(x) for x in logits.argmax(-1)],
        "token_nll": tok_nll,
        "f32_islands_effect": f64_effect(model, model.config, tokens, logits, device),
    }
    write_json(cdir / "ref.json", ref)
    return {"name": name, "dir": name, "architecture": "LlamaForCausalLM", "weights_dtype": "bfloat16"}


def synthetic_tech_text(tok, n_tokens: int, seed: int = 7) -> tuple[str, list[int]]:
    import random

    rng = random.Random(seed)
    paras = []
    while True:
        sents = []
        for _ in range(rng.randint(3, 6)):
            t = rng.choice(TECH_TEMPLATES)
            sents.append(t.format(**{k: rng.choice(v) for k, v in TECH_WORDS.items()}))
        paras.append(" ".join(sents))
        text = "\n\n".join(paras)
        ids = tok(text)["input_ids"]
        if len(ids) >= n_tokens:
            return text, ids[:n_tokens]


def make_docs_long(out: Path, model_dir: Path, device: str, n_tokens: int) -> dict:
    name = "docs27M_long"
    cdir = out / name
    if cdir.exists():
        shutil.rmtree(cdir)
    cdir.mkdir(parents=True)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    text, tokens = synthetic_tech_text(tok, n_tokens)
    base_cfg = json.loads((model_dir / "config.json").read_text())
    orig = base_cfg["max_position_embeddings"]
    yarn_cfg = copy.deepcopy(base_cfg)
    yarn_cfg["rope_parameters"] = {
        "rope_type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": orig,
        "rope_theta": base_cfg["rope_parameters"]["rope_theta"],
    }
    yarn_cfg["max_position_embeddings"] = 4 * orig
    write_json(cdir / "config_yarn.json", yarn_cfg)
    # (the model's config.json stays in shared/)

    results = {}
    nll_rows = []
    for label, cfgd in [("none", base_cfg), ("yarn", yarn_cfg)]:
        cfg = AutoConfig.for_model(**{k: v for k, v in cfgd.items() if k not in ("transformers_version",)})
        m = load_f64(model_dir, device, config=cfg)
        t0 = time.time()
        lg = forward_logits(m, tokens, device)
        nll, tnll = nll_stats(lg, tokens)
        nll1k, _ = nll_stats(lg[:orig], tokens[:orig])
        results[label] = {
            "mean_nll": nll,
            "ppl": math.exp(nll),
            "mean_nll_first_1024": nll1k,
            "mean_nll_last_1024": float(np.mean(tnll[-orig:])),
            "rope": rope_info(m),
            "seconds": round(time.time() - t0, 1),
        }
        nll_rows.append(tnll)
        print(f"  {name} rope={label}: mean NLL {nll:.4f} (ppl {math.exp(nll):.2f}), first 1K {nll1k:.4f}, last 1K {results[label]['mean_nll_last_1024']:.4f}  [{results[label]['seconds']} s]")
        del m, lg
    save_npy(cdir / "token_nll.npy", np.array(nll_rows))
    ref = {
        "case": name,
        "architecture": "LlamaForCausalLM",
        "tokens": tokens,
        "n_tokens": len(tokens),
        "vocab_size": base_cfg["vocab_size"],
        "weights_dtype": "bfloat16",
        "model_dir": rel_to_repo(model_dir),
        "model_dir_in_shared": shared_rel(model_dir),
        "logits_file": None,
        "mean_nll": results["none"]["mean_nll"],
        "mean_nll_yarn": results["yarn"]["mean_nll"],
        "results": results,
        **versions(),
        "device": device,
        "text": text,
        "notes": (
            "Synthetic technical text (seeded templates), tokens = tokenizer(text)[:n] with BOS. "
            "Two float64 forwards over all tokens: rope 'none' = the model's own config.json "
            "(default RoPE, max_position_embeddings 1024, evaluated past it), 'yarn' = "
            "config_yarn.json (rope_parameters yarn factor 4, original 1024, "
            "max_position_embeddings 4096). token_nll.npy: float64 [2, n-1], row 0 none, row 1 "
            "yarn, NLL of tokens[1:]. No logits stored (size)."
        ),
    }
    write_json(cdir / "ref.json", ref)
    return {"name": name, "dir": name, "architecture": "LlamaForCausalLM", "weights_dtype": "bfloat16"}


# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "tests/fixtures/ref"), help="output folder")
    ap.add_argument("--stories", default=str(REPO / "../shared/models/stories260K"))
    ap.add_argument("--docs", default=str(REPO / "../shared/models/docs-27M"))
    ap.add_argument("--device", default="cpu", help="torch device for the reference forwards (cpu, cuda)")
    ap.add_argument("--cases", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--long", action="store_true", help="also make docs27M_long (4096 tokens, slow on CPU)")
    ap.add_argument("--long-tokens", type=int, default=4096)
    ap.add_argument("--lm-head-gain", type=float, default=2.0, help="lm_head std = gain/sqrt(hidden)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(filter(None, args.cases.split(",")))
    all_names = [c["name"] for c in CASES] + ["stories260K", "docs27M", "docs27M_long"]
    unknown = wanted - set(all_names)
    if unknown:
        ap.error(f"unknown case(s) {sorted(unknown)}; known: {all_names}")

    def want(n: str) -> bool:
        if n == "docs27M_long":
            return args.long or n in wanted
        return not wanted or n in wanted

    print(f"transformers {transformers.__version__}, torch {torch.__version__}, device {args.device}")
    entries = {}
    for case in CASES:
        if want(case["name"]):
            entries[case["name"]] = make_random_case(case, out, args.device, args.lm_head_gain)
    if want("stories260K"):
        entries["stories260K"] = make_stories(out, Path(args.stories), args.device)
    if want("docs27M"):
        entries["docs27M"] = make_docs(out, Path(args.docs), args.device)
    if want("docs27M_long"):
        entries["docs27M_long"] = make_docs_long(out, Path(args.docs), args.device, args.long_tokens)

    # Merge with an existing index so that partial regenerations keep the other cases listed.
    idx_path = out / "index.json"
    old = json.loads(idx_path.read_text()) if idx_path.exists() else {"cases": []}
    merged = {c["name"]: c for c in old.get("cases", []) if (out / c["dir"] / "ref.json").exists()}
    merged.update(entries)
    order = {n: i for i, n in enumerate(all_names)}
    index = {
        "generator": "tools/make_reference.py",
        **versions(),
        "sequence_length_random_cases": SEQ_LEN,
        "cases": sorted(merged.values(), key=lambda c: order.get(c["name"], 99)),
    }
    write_json(idx_path, index)
    print(f"wrote {len(entries)} case(s) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
