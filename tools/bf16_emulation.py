#!/usr/bin/env python3
"""numpy forward of the farsight transformers fixtures (Llama/Mistral/Qwen2 semantics),
used to separate bf16 WEIGHT rounding error from bf16 activation (kernel) rounding error.

Modes
  ref   : f32 weights, fp64 arithmetic + transformers' f32 islands (RMSNorm normalise in f32,
          eager softmax in f32, RoPE cos/sin in f32) -> must reproduce logits.npy (~1e-9 rel)
  f64   : same but no islands (pure fp64)
  w16   : step 2: every tensor (matrices, norm weights, embedding, biases) rounded to bf16 (RNE),
          arithmetic fp64
  gpu   : step 3: w16 + activations rounded to bf16 at GEMM inputs / qkv / rope out / attn out /
          gate, up, silu(gate), silu*up; residual rounded to f32; logits f32
Usage: python3 tools/bf16_emulation.py [--json OUT] [case ...]
The JSON (tests/fixtures/ref/bf16_emulation.json) is what GpuModel.TransformersFixturesInBf16
compares the CUDA backend's bf16 error with: our kernels against the exact-arithmetic emulation
of the same bf16 roundings.
"""
import json, struct, sys, os
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "ref")


def load_st(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    base = 8 + n
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        raw = b[base + s: base + e]
        if v["dtype"] == "F32":
            a = np.frombuffer(raw, "<f4").astype(np.float64)
        elif v["dtype"] == "BF16":
            a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        elif v["dtype"] == "F64":
            a = np.frombuffer(raw, "<f8").copy()
        else:
            raise ValueError(v["dtype"])
        out[k] = a.reshape(v["shape"])
    return out


def bf16(x):
    """Round to bfloat16 (round-to-nearest-even on the upper 16 bits of float32), return float64."""
    f = np.asarray(x, dtype=np.float32)  # fp64 -> f32 (RNE) first; double rounding is negligible here
    u = f.view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def bf16_exact(x):
    """Exact fp64 -> bf16 RNE (no intermediate f32 rounding)."""
    x = np.asarray(x, dtype=np.float64)
    m, e = np.frexp(x)  # x = m * 2^e, 0.5 <= |m| < 1 ; bf16 has 8 significant bits
    return np.ldexp(np.round(m * 256.0), e - 8)  # np.round = half-to-even


def f32(x):
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def var_torch_avx2(x32, lanes=8):
    """torch CPU float32 mean(-1) summation order (cascade_sum inner, AVX2): reproduces row 0 to 1e-16."""
    F = np.float32
    sq = (x32 * x32).astype(F); N = sq.shape[-1]; nv = N // lanes
    v = [sq[..., i * lanes:(i + 1) * lanes] for i in range(nv)]
    acc = [np.zeros_like(v[0]) for _ in range(4)]
    for i in range(nv // 4):
        for k in range(4):
            acc[k] = (acc[k] + v[i * 4 + k]).astype(F)
    for i in range((nv // 4) * 4, nv):
        acc[0] = (acc[0] + v[i]).astype(F)
    P = acc[0]
    for k in range(1, 4):
        P = (P + acc[k]).astype(F)
    t = np.zeros(sq.shape[:-1] + (1,), F)
    for k in range(lanes):
        t = (t + P[..., k:k + 1]).astype(F)
    for k in range(nv * lanes, N):
        t = (t + sq[..., k:k + 1]).astype(F)
    return (t / F(N)).astype(F)


def silu(x):
    return x / (1.0 + np.exp(-x))


class Case:
    def __init__(self, name):
        d = os.path.join(ROOT, name)
        self.name = name
        self.cfg = json.load(open(os.path.join(d, "config.json")))
        self.ref = json.load(open(os.path.join(d, "ref.json")))
        self.W = load_st(os.path.join(d, "model.safetensors"))
        self.logits = np.load(os.path.join(d, "logits.npy"))
        self.tokens = np.array(self.ref["tokens"])


def inv_freq_f64(cfg, seq_len):
    """All-fp64 RoPE parameters (transformers' formulas, as in tools/make_reference.py _inv_freq_f64)."""
    import math
    rp = cfg["rope_parameters"]; rt = rp.get("rope_type", "default"); base = float(rp["rope_theta"])
    d = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    i = np.arange(0, d, 2, dtype=np.float64); pf = base ** (i / d); inv = 1.0 / pf; att = 1.0
    if rt == "linear":
        inv = inv / rp["factor"]
    elif rt == "yarn":
        f = rp["factor"]; om = rp["original_max_position_embeddings"]
        att = rp.get("attention_factor") or (0.1 * math.log(f) + 1.0 if f > 1 else 1.0)
        bf, bs = rp.get("beta_fast") or 32, rp.get("beta_slow") or 1
        cd = lambda r: (d * math.log(om / (r * 2 * math.pi))) / (2 * math.log(base))
        lo, hi = cd(bf), cd(bs)
        if rp.get("truncate", True):
            lo, hi = math.floor(lo), math.ceil(hi)
        lo, hi = max(lo, 0), min(hi, d - 1)
        if lo == hi:
            hi += 0.001
        ramp = np.clip((np.arange(d // 2) - lo) / (hi - lo), 0, 1); extra = 1 - ramp
        inv = (1.0 / (f * pf)) * (1 - extra) + (1.0 / pf) * extra
    elif rt == "llama3":
        f, lf, hf = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
        om = rp["original_max_position_embeddings"]; wl = 2 * math.pi / inv
        out = np.where(wl > om / lf, inv / f, inv); sm = (om / wl - lf) / (hf - lf)
        mid = (wl >= om / hf) & (wl <= om / lf)
        inv = np.where(mid, (1 - sm) * inv / f + sm * inv, out)
    elif rt == "longrope":
        om = rp["original_max_position_embeddings"]; f = rp.get("factor") or cfg["max_position_embeddings"] / om
        att = rp.get("attention_factor") or (1.0 if f <= 1 else math.sqrt(1 + math.log(f) / math.log(om)))
        ext = rp["long_factor"] if seq_len > om else rp["short_factor"]
        inv = 1.0 / (np.array(ext, dtype=np.float64) * pf)
    elif rt != "default":
        raise ValueError(rt)
    return inv, float(att)


def forward(c, mode="ref", wround=None):
    cfg = c.cfg
    islands = mode == "ref"
    act = mode == "gpu"
    H = cfg["hidden_size"]; nh = cfg["num_attention_heads"]; nkv = cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    eps = cfg["rms_norm_eps"]; L = cfg["num_hidden_layers"]
    sw = cfg.get("sliding_window") if (cfg.get("model_type") == "mistral" or cfg.get("use_sliding_window")) else None
    W = dict(c.W)
    if wround is not None:
        W = {k: wround(v) for k, v in W.items()}
    if "lm_head.weight" not in W:
        W["lm_head.weight"] = W["model.embed_tokens.weight"]
    A = bf16 if act else (lambda x: x)           # activation rounding (GPU emulation)
    R = f32 if act else (lambda x: x)            # residual-stream rounding
    tok = c.tokens; T = len(tok)

    # RoPE: inv_freq (f32, recorded) * pos in f32, cos/sin in f32 (transformers), * attention_scaling
    inv = np.array(c.ref["rope"]["inv_freq"], dtype=np.float32)
    att = np.float32(c.ref["rope"]["attention_scaling"])
    fr = (inv[None, :] * np.arange(T, dtype=np.float32)[:, None]).astype(np.float32)
    emb = np.concatenate([fr, fr], -1)
    if mode in ("f64", "w16"):  # transformers' all-float64 forward (make_reference.py f64_effect)
        inv64, att64 = inv_freq_f64(cfg, T)
        e64 = np.arange(T, dtype=np.float64)[:, None] * inv64[None, :]
        e64 = np.concatenate([e64, e64], -1)
        cos, sin = np.cos(e64) * att64, np.sin(e64) * att64
    elif islands or act:
        cos = (np.cos(emb.astype(np.float64)).astype(np.float32) * att).astype(np.float64)
        sin = (np.sin(emb.astype(np.float64)).astype(np.float32) * att).astype(np.float64)
    if act:
        cos, sin = bf16(cos), bf16(sin)

    def rms(x, w):
        if islands:
            x32 = x.astype(np.float32)
            var = var_torch_avx2(x32)
            y = (x32 * (np.float32(1) / np.sqrt(var + np.float32(eps)))).astype(np.float64)
            return w * y
        var = np.mean(x * x, -1, keepdims=True)
        return w * (x / np.sqrt(var + eps))

    def lin(x, p):
        y = x @ W[p + ".weight"].T
        if p + ".bias" in W:
            y = y + W[p + ".bias"]
        return y

    def rope(x):  # x [T, n, hd]
        h = hd // 2
        rot = np.concatenate([-x[..., h:], x[..., :h]], -1)
        return x * cos[:, None, :] + rot * sin[:, None, :]

    i = np.arange(T)
    mask = i[None, :] <= i[:, None]
    if sw is not None:
        mask &= i[None, :] > i[:, None] - sw
    scale = hd ** -0.5

    x = R(W["model.embed_tokens.weight"][tok])
    for l in range(L):
        p = f"model.layers.{l}."
        h = A(rms(x, W[p + "input_layernorm.weight"]))
        q = A(lin(h, p + "self_attn.q_proj")).reshape(T, nh, hd)
        k = A(lin(h, p + "self_attn.k_proj")).reshape(T, nkv, hd)
        v = A(lin(h, p + "self_attn.v_proj")).reshape(T, nkv, hd)
        q = A(rope(q)); k = A(rope(k))
        rep = nh // nkv
        k = np.repeat(k, rep, axis=1); v = np.repeat(v, rep, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) * scale
        s = np.where(mask[None], s, -np.inf)
        if islands:
            s32 = s.astype(np.float32)
            e = np.exp(s32 - s32.max(-1, keepdims=True))
            pr = (e / e.sum(-1, keepdims=True, dtype=np.float32)).astype(np.float64)
        else:
            e = np.exp(s - s.max(-1, keepdims=True))
            pr = e / e.sum(-1, keepdims=True)
        o = A(np.einsum("hqk,khd->qhd", pr, v).reshape(T, nh * hd))
        x = R(x + lin(o, p + "self_attn.o_proj"))
        h = A(rms(x, W[p + "post_attention_layernorm.weight"]))
        g = A(lin(h, p + "mlp.gate_proj")); u = A(lin(h, p + "mlp.up_proj"))
        m = A(A(silu(g)) * u)
        x = R(x + lin(m, p + "mlp.down_proj"))
    h = A(rms(x, W["model.norm.weight"]))
    lg = h @ W["lm_head.weight"].T
    return R(lg)


def metrics(lg, ref):
    rel = np.sqrt(((lg - ref) ** 2).sum() / (ref ** 2).sum())
    am = lg.argmax(-1) == ref.argmax(-1)
    return rel, am.mean(), np.nonzero(~am)[0]


def gaps(ref):
    s = np.sort(ref, -1)
    return s[:, -1] - s[:, -2]


STATIC = ["default", "linear", "llama3", "yarn", "longrope"]


def main():
    idx = json.load(open(os.path.join(ROOT, "index.json")))
    args = sys.argv[1:]
    json_out = None
    if args[:1] == ["--json"]:
        json_out, args = args[1], args[2:]
    names = args or [c["name"] for c in idx["cases"]]
    out = {}
    rows = []
    for n in names:
        if n.startswith("docs27M") or not os.path.exists(os.path.join(ROOT, n, "model.safetensors")):
            print(f"# skip {n} (no random-weight safetensors / docs case)"); continue
        c = Case(n)
        rt = c.cfg["rope_parameters"].get("rope_type", "default")
        if rt not in STATIC:
            print(f"# skip {n} (rope_type {rt})"); continue
        ref = c.logits
        g = gaps(ref)
        r0, a0, _ = metrics(forward(c, "ref"), ref)
        lg1 = forward(c, "f64"); r1, a1, _ = metrics(lg1, ref)
        mx = np.abs(lg1 - ref).max(); rec = c.ref["f32_islands_effect"]["max_abs_diff"]
        r2, a2, mm2 = metrics(forward(c, "w16", bf16), ref)
        r3, a3, mm3 = metrics(forward(c, "gpu", bf16), ref)
        print(f"\n== {n} ({c.cfg['model_type']}, rope {rt}, wdtype {c.ref['weights_dtype']})")
        print(f"  step1 islands-emulating f64 vs ref: relL2 {r0:.2e}  argmax {a0*100:.1f}%   (pure f64: relL2 {r1:.2e}, argmax {a1*100:.1f}%)")
        print(f"  step1 all-f64 forward: max|d| vs logits.npy {mx:.10e}, transformers' own all-f64 forward recorded {rec:.10e} (rel diff {abs(mx/rec-1):.1e}); row0 islands-emulated err {np.abs(forward(c,'ref')[0]-ref[0]).max():.1e}")
        print(f"  step2 bf16 weights           : relL2 {r2:.3e}  argmax {a2*100:.1f}%  mismatches at {list(mm2)} ref gap {np.round(g[mm2],4).tolist()}")
        print(f"  step3 bf16 weights+GPU acts  : relL2 {r3:.3e}  argmax {a3*100:.1f}%  mismatches at {list(mm3)} ref gap {np.round(g[mm3],4).tolist()}")
        print(f"  ref top1-top2 gap: n<0.02 {int((g<0.02).sum())}  n<0.05 {int((g<0.05).sum())}  n<0.1 {int((g<0.1).sum())}  (of {len(g)}), min {g.min():.4f}, median {np.median(g):.3f}")
        rows.append((n, a2, r2, a3, r3, r0, (g < 0.02).sum(), (g < 0.05).sum(), (g < 0.1).sum()))
        out[n] = {"bf16_weights_rel_l2": r2, "bf16_weights_argmax": a2, "bf16_path_rel_l2": r3,
                  "bf16_path_argmax": a3, "ref_gap_below_0.05": int((g < 0.05).sum())}
    print("\n| case | step1 relL2 | step2 argmax % | step2 relL2 | step3 argmax % | step3 relL2 | gaps<0.02/0.05/0.1 |")
    print("|---|---|---|---|---|---|---|")
    for n, a2, r2, a3, r3, r0, g1, g2, g3 in rows:
        print(f"| {n} | {r0:.1e} | {a2*100:.1f} | {r2:.2e} | {a3*100:.1f} | {r3:.2e} | {g1}/{g2}/{g3} |")
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"generator": "tools/bf16_emulation.py", "cases": out}, f, indent=1)


if __name__ == "__main__":
    main()
