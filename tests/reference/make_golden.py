#!/usr/bin/python3
"""Independent PyTorch reference for qpeft: writes small golden files for the C++ tests.

What it computes
----------------
For two tiny random models -- ``llama`` (Llama-3 style: grouped-query attention, llama3 rope
scaling, untied lm_head) and ``qwen2`` (q/k/v biases, tied embeddings, rope_theta 1e6) -- it
writes, under ``<out>/<variant>/``:

* ``config.json``                         Hugging Face config (LlamaForCausalLM / Qwen2ForCausalLM)
* ``model.safetensors``                   F32 base weights, Hugging Face tensor names
* ``adapter_init/adapter_config.json``    PEFT LoRA config (r=4, lora_alpha=8, 7 target modules)
* ``adapter_init/adapter_model.safetensors``  F32 LoRA A/B with PEFT key names (B is NONZERO)
* ``golden.safetensors``                  input_ids, labels, logits_base, logits_lora, loss_lora,
                                          grad.<peft key>, losses, grad_norms, final.<peft key>

The model is written from scratch in plain torch ops with Hugging Face Llama/Qwen2 semantics
(RMSNorm, rotate_half rotary embedding, repeat_kv GQA, causal softmax attention, SiLU-gated MLP,
pre-norm residual blocks, final norm, lm_head). Every LoRA-targeted linear computes
``y = x W^T (+ b) + s * (x A^T) B^T`` with ``s = lora_alpha / r``.
The loss is the Hugging Face causal-LM loss (logits[:, :-1] predict labels[:, 1:], mean
cross-entropy over labels != -100). Training: 5 steps on the same batch with
``clip_grad_norm_(adapter, 1.0)`` and ``AdamW(lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
weight_decay=0.01)``.

All weights are drawn, rounded to float32 and stored; every golden value is then computed in
float64 from exactly those float32 values and rounded to float32 only when stored, so the golden
data carries no float32 arithmetic error of its own.

The script also runs self-checks (an independent loop-based numpy forward pass, a finite
difference check of a few LoRA gradients, hand-written clip + AdamW against torch's) and measures
how far a float32 run of the same pipeline lands from the float64 golden values (the numbers
quoted in tests/data/golden/README.md).

How to run
----------
    /usr/bin/python3 tests/reference/make_golden.py --out tests/data/golden

Needs only torch (tested with 1.13) and numpy; no transformers / peft / safetensors packages.
Output is deterministic (fixed seeds, single thread): running it twice gives byte-identical files.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

R = 4
LORA_ALPHA = 8
SCALING = LORA_ALPHA / R
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BATCH, SEQ = 2, 16
STEPS = 5
LR, BETAS, ADAM_EPS, WEIGHT_DECAY, MAX_GRAD_NORM = 1e-2, (0.9, 0.999), 1e-8, 0.01, 1.0

VARIANTS = {
    "llama": dict(
        seed=1234,
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=96,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
        max_position_embeddings=128,
        tie_word_embeddings=False,
        attention_bias=False,
        bos_token_id=1,
        eos_token_id=2,
        extra=dict(mlp_bias=False, attention_dropout=0.0, pretraining_tp=1),
    ),
    "qwen2": dict(
        seed=5678,
        architectures=["Qwen2ForCausalLM"],
        model_type="qwen2",
        hidden_size=48,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=3,
        num_key_value_heads=1,
        head_dim=16,
        vocab_size=80,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        rope_scaling=None,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        # Qwen2 has biases on q/k/v only (never on o_proj). Real Qwen2 config.json files do not
        # carry this key at all; it is written here only because the qpeft config layout lists it.
        attention_bias=True,
        bos_token_id=78,
        eos_token_id=79,
        extra=dict(attention_dropout=0.0, use_sliding_window=False, sliding_window=None,
                   max_window_layers=2),
    ),
}


# --------------------------------------------------------------------------------------------
# safetensors writer (by hand)
# --------------------------------------------------------------------------------------------

def write_safetensors(path, tensors, metadata=None):
    """tensors: dict name -> torch tensor (float32 or int32). Names sorted; data in that order."""
    header = {}
    blobs = []
    off = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype == torch.float32:
            dt, arr = "F32", t.numpy().astype("<f4")
        elif t.dtype == torch.int32:
            dt, arr = "I32", t.numpy().astype("<i4")
        else:
            raise ValueError(f"{name}: unsupported dtype {t.dtype}")
        b = arr.tobytes(order="C")
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = dict(metadata or {"format": "pt"})
    hj = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((-len(hj)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dt = {"F32": "<f4", "I32": "<i4"}[info["dtype"]]
        out[name] = torch.from_numpy(np.frombuffer(raw[base + b:base + e], dtype=dt).copy()
                                     .reshape(info["shape"]))
    return out


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------

def module_path(i, target):
    kind = "mlp" if target in ("gate_proj", "up_proj", "down_proj") else "self_attn"
    return f"model.layers.{i}.{kind}.{target}"


def linear_shape(cfg, target):
    """(out, in) of each targeted linear, PyTorch weight layout."""
    H, I = cfg["hidden_size"], cfg["intermediate_size"]
    qd = cfg["num_attention_heads"] * cfg["head_dim"]
    kvd = cfg["num_key_value_heads"] * cfg["head_dim"]
    return {"q_proj": (qd, H), "k_proj": (kvd, H), "v_proj": (kvd, H), "o_proj": (H, qd),
            "gate_proj": (I, H), "up_proj": (I, H), "down_proj": (H, I)}[target]


def has_bias(cfg, target):
    if cfg["model_type"] == "qwen2":
        return target in ("q_proj", "k_proj", "v_proj")
    return bool(cfg["attention_bias"]) and target in ("q_proj", "k_proj", "v_proj", "o_proj")


def make_base_weights(cfg, g):
    """float32 tensors, Hugging Face names."""
    H, V = cfg["hidden_size"], cfg["vocab_size"]

    def mat(*shape):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * 0.02).float()

    def norm(n):
        return (1.0 + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)).float()

    w = {"model.embed_tokens.weight": mat(V, H)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(H)
        for t in ("q_proj", "k_proj", "v_proj", "o_proj"):
            o, n = linear_shape(cfg, t)
            w[module_path(i, t) + ".weight"] = mat(o, n)
            if has_bias(cfg, t):
                w[module_path(i, t) + ".bias"] = mat(o)  # 0.02 * normal
        w[p + "post_attention_layernorm.weight"] = norm(H)
        for t in ("gate_proj", "up_proj", "down_proj"):
            o, n = linear_shape(cfg, t)
            w[module_path(i, t) + ".weight"] = mat(o, n)
    w["model.norm.weight"] = norm(H)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = mat(V, H)
    return w


def peft_key(i, target, ab):
    return f"base_model.model.{module_path(i, target)}.lora_{ab}.weight"


def make_adapter(cfg, g):
    a = {}
    for i in range(cfg["num_hidden_layers"]):
        for t in TARGETS:
            o, n = linear_shape(cfg, t)
            bound = 1.0 / math.sqrt(n)
            a[peft_key(i, t, "A")] = ((torch.rand(R, n, generator=g, dtype=torch.float64) * 2 - 1)
                                      * bound).float()
            a[peft_key(i, t, "B")] = (torch.randn(o, R, generator=g, dtype=torch.float64)
                                      * 0.02).float()
    return a


# --------------------------------------------------------------------------------------------
# Model (plain torch ops, Hugging Face Llama / Qwen2 semantics)
# --------------------------------------------------------------------------------------------

def rope_inv_freq(cfg, dtype):
    d = cfg["head_dim"]
    base = cfg["rope_theta"]
    inv_freq = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    rs = cfg["rope_scaling"]
    if rs is not None:
        assert rs["rope_type"] == "llama3"
        factor = rs["factor"]
        lo, hi = rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_freq_wavelen = old / lo
        high_freq_wavelen = old / hi
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
        inv_freq = torch.where(is_medium, smoothed, scaled)
    return inv_freq.to(dtype)


def rope_cos_sin(cfg, T, dtype):
    # inv_freq is derived in float64 and rounded to `dtype`; the angles and cos/sin are then
    # computed in `dtype` (as Hugging Face does in float32), so the float32 measurement includes
    # the rope rounding an f32 implementation would see.
    inv_freq = rope_inv_freq(cfg, dtype)
    pos = torch.arange(T, dtype=dtype)
    freqs = pos[:, None] * inv_freq[None, :]          # [T, d/2]
    emb = torch.cat([freqs, freqs], dim=-1)           # [T, d]
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def rms_norm(x, w, eps):
    return w * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def linear(x, W, b=None, lora=None):
    y = x @ W.t()
    if b is not None:
        y = y + b
    if lora is not None:
        A, B = lora
        y = y + SCALING * ((x @ A.t()) @ B.t())
    return y


def forward(cfg, W, ids, adapter=None):
    """W, adapter: dicts of tensors in the compute dtype. Returns logits [B, T, V]."""
    dtype = W["model.embed_tokens.weight"].dtype
    Bsz, T = ids.shape
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    cos, sin = rope_cos_sin(cfg, T, dtype)            # [T, hd]
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)

    def lin(i, t, x):
        p = module_path(i, t)
        lora = None
        if adapter is not None:
            lora = (adapter[peft_key(i, t, "A")], adapter[peft_key(i, t, "B")])
        return linear(x, W[p + ".weight"], W.get(p + ".bias"), lora)

    h = W["model.embed_tokens.weight"][ids.long()]    # [B, T, H]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = rms_norm(h, W[p + "input_layernorm.weight"], eps)
        q = lin(i, "q_proj", x).view(Bsz, T, nh, hd).transpose(1, 2)   # [B, nh, T, hd]
        k = lin(i, "k_proj", x).view(Bsz, T, nkv, hd).transpose(1, 2)  # [B, nkv, T, hd]
        v = lin(i, "v_proj", x).view(Bsz, T, nkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = nh // nkv                                 # repeat_kv: q head h uses kv head h // rep
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        scores = scores.masked_fill(causal, float("-inf"))
        att = torch.softmax(scores, dim=-1) @ v        # [B, nh, T, hd]
        att = att.transpose(1, 2).reshape(Bsz, T, nh * hd)
        h = h + lin(i, "o_proj", att)
        x = rms_norm(h, W[p + "post_attention_layernorm.weight"], eps)
        m = torch.nn.functional.silu(lin(i, "gate_proj", x)) * lin(i, "up_proj", x)
        h = h + lin(i, "down_proj", m)
    h = rms_norm(h, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return h @ head.t()


def causal_lm_loss(logits, labels):
    V = logits.shape[-1]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1, :].reshape(-1, V), labels[:, 1:].reshape(-1).long(),
        ignore_index=-100, reduction="mean")


def run_pipeline(cfg, W32, A32, ids, labels, dtype):
    """Everything the golden file holds, computed in `dtype` from the float32 inputs."""
    W = {k: v.to(dtype) for k, v in W32.items()}
    A = {k: v.to(dtype).clone().requires_grad_(True) for k, v in A32.items()}
    keys = sorted(A)
    out = {}
    with torch.no_grad():
        out["logits_base"] = forward(cfg, W, ids)
    logits = forward(cfg, W, ids, A)
    loss = causal_lm_loss(logits, labels)
    grads = torch.autograd.grad(loss, [A[k] for k in keys])
    out["logits_lora"] = logits.detach()
    out["loss_lora"] = loss.detach().reshape(1)
    for k, gk in zip(keys, grads):
        out["grad." + k] = gk
    params = [A[k] for k in keys]
    opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY)
    losses, norms = [], []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        l = causal_lm_loss(forward(cfg, W, ids, A), labels)
        losses.append(l.detach())
        l.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM).detach())
        opt.step()
    out["losses"] = torch.stack(losses)
    out["grad_norms"] = torch.stack(norms)
    for k in keys:
        out["final." + k] = A[k].detach().clone()
    return out


# --------------------------------------------------------------------------------------------
# Self-checks
# --------------------------------------------------------------------------------------------

def numpy_forward(cfg, W32, ids, adapter32=None, dt=np.float64):
    """Second, loop-based forward pass written straight from the math (no torch), per token and
    per head. With dt=np.float32 it doubles as a float32 implementation whose summation order
    differs from the torch one (matrix-vector products, per-head loops)."""
    W = {k: v.numpy().astype(dt) for k, v in W32.items()}
    Ad = None if adapter32 is None else {k: v.numpy().astype(dt) for k, v in adapter32.items()}
    SC = dt(SCALING)
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    ids = ids.numpy()
    Bsz, T = ids.shape
    half = hd // 2
    # inverse frequencies, llama3 scaling written as a per-frequency branch
    inv = [cfg["rope_theta"] ** (-(2 * j) / hd) for j in range(half)]
    rs = cfg["rope_scaling"]
    if rs is not None:
        f, lo, hi, old = (rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"],
                          rs["original_max_position_embeddings"])
        new = []
        for fr in inv:
            wl = 2 * math.pi / fr
            if wl < old / hi:
                new.append(fr)
            elif wl > old / lo:
                new.append(fr / f)
            else:
                s = (old / wl - lo) / (hi - lo)
                new.append((1 - s) * fr / f + s * fr)
        inv = new

    def norm(x, w):
        return w * (x / dt(math.sqrt(float(np.mean(x * x, dtype=dt)) + eps)))

    def lin(i, t, x):
        p = module_path(i, t)
        y = W[p + ".weight"] @ x
        if p + ".bias" in W:
            y = y + W[p + ".bias"]
        if Ad is not None:
            y = y + SC * (Ad[peft_key(i, t, "B")] @ (Ad[peft_key(i, t, "A")] @ x))
        return y

    def rope(vec, pos):
        outv = vec.copy()
        for j in range(half):
            c, s = dt(math.cos(pos * inv[j])), dt(math.sin(pos * inv[j]))
            x1, x2 = vec[j], vec[j + half]
            outv[j] = x1 * c - x2 * s
            outv[j + half] = x2 * c + x1 * s
        return outv

    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    logits = np.zeros((Bsz, T, cfg["vocab_size"]), dtype=dt)
    for b in range(Bsz):
        h = [W["model.embed_tokens.weight"][ids[b, t]].copy() for t in range(T)]
        for i in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            xs = [norm(h[t], W[p + "input_layernorm.weight"]) for t in range(T)]
            qs = [lin(i, "q_proj", x).reshape(nh, hd) for x in xs]
            ks = [lin(i, "k_proj", x).reshape(nkv, hd) for x in xs]
            vs = [lin(i, "v_proj", x).reshape(nkv, hd) for x in xs]
            for t in range(T):
                qs[t] = np.stack([rope(qs[t][a], t) for a in range(nh)])
                ks[t] = np.stack([rope(ks[t][a], t) for a in range(nkv)])
            for t in range(T):
                att = np.zeros(nh * hd, dtype=dt)
                for a in range(nh):
                    kv = a // (nh // nkv)
                    sc = np.array([qs[t][a] @ ks[u][kv] for u in range(t + 1)],
                                  dtype=dt) / dt(math.sqrt(hd))
                    e = np.exp(sc - sc.max())
                    pr = e / e.sum()
                    att[a * hd:(a + 1) * hd] = sum(pr[u] * vs[u][kv] for u in range(t + 1))
                h[t] = h[t] + lin(i, "o_proj", att)
            for t in range(T):
                x = norm(h[t], W[p + "post_attention_layernorm.weight"])
                gte = lin(i, "gate_proj", x)
                m = gte / (dt(1) + np.exp(-gte)) * lin(i, "up_proj", x)
                h[t] = h[t] + lin(i, "down_proj", m)
        for t in range(T):
            logits[b, t] = head @ norm(h[t], W["model.norm.weight"])
    return logits


def numpy_loss(logits, labels):
    labels = labels.numpy()
    tot, n = 0.0, 0
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1] - 1):
            y = labels[b, t + 1]
            if y == -100:
                continue
            z = logits[b, t]
            m = z.max()
            tot += (m + math.log(np.exp(z - m).sum())) - z[y]
            n += 1
    return tot / n


def manual_train(cfg, W32, A32, ids, labels, grad_noise=0.0, noise_seed=0,
                 weight_decay=WEIGHT_DECAY):
    """Hand-written clip_grad_norm_ + AdamW (the formulas the C++ side should implement).

    grad_noise > 0 adds N(0, grad_noise^2) to every gradient element at every step: a stand-in
    for the gradient rounding noise of some other float32 implementation, used to see how
    sensitive final.* is (Adam divides by sqrt(v), so elements whose gradient is tiny amplify
    noise)."""
    gen = torch.Generator().manual_seed(noise_seed)
    W = {k: v.double() for k, v in W32.items()}
    keys = sorted(A32)
    P = {k: A32[k].double().clone() for k in keys}
    m = {k: torch.zeros_like(P[k]) for k in keys}
    v = {k: torch.zeros_like(P[k]) for k in keys}
    b1, b2 = BETAS
    losses, norms = [], []
    for step in range(1, STEPS + 1):
        Pg = {k: P[k].clone().requires_grad_(True) for k in keys}
        loss = causal_lm_loss(forward(cfg, W, ids, Pg), labels)
        gs = torch.autograd.grad(loss, [Pg[k] for k in keys])
        G = dict(zip(keys, gs))
        if grad_noise > 0:
            G = {k: G[k] + grad_noise * torch.randn(G[k].shape, generator=gen,
                                                      dtype=torch.float64) for k in keys}
        norm = math.sqrt(sum(float((G[k] ** 2).sum()) for k in keys))
        coef = min(1.0, MAX_GRAD_NORM / (norm + 1e-6))
        losses.append(float(loss))
        norms.append(norm)
        for k in keys:
            g = G[k] * coef
            P[k] = P[k] * (1 - LR * weight_decay)
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            mhat = m[k] / (1 - b1 ** step)
            denom = torch.sqrt(v[k]) / math.sqrt(1 - b2 ** step) + ADAM_EPS
            P[k] = P[k] - LR * mhat / denom
    return losses, norms, P


def finite_diff_check(cfg, W32, A32, ids, labels, g64, n_probe=8, h=1e-4):
    W = {k: v.double() for k, v in W32.items()}
    keys = sorted(A32)
    gen = torch.Generator().manual_seed(99)
    worst = 0.0
    for j in range(n_probe):
        k = keys[int(torch.randint(len(keys), (1,), generator=gen))]
        idx = int(torch.randint(A32[k].numel(), (1,), generator=gen))
        vals = []
        for sgn in (+1, -1):
            A = {kk: vv.double().clone() for kk, vv in A32.items()}
            A[k].view(-1)[idx] += sgn * h
            vals.append(float(causal_lm_loss(forward(cfg, W, ids, A), labels)))
        fd = (vals[0] - vals[1]) / (2 * h)
        an = float(g64["grad." + k].view(-1)[idx])
        worst = max(worst, abs(fd - an) / max(abs(an), 1e-8))
    return worst


def diff_stats(a, b):
    """max |a-b|, max |a-b| / max|b|, max elementwise |a-b|/|b| over |b| >= 1e-3*max|b|."""
    a, b = a.double(), b.double()
    d = (a - b).abs()
    mx = float(b.abs().max())
    big = b.abs() >= 1e-3 * mx
    rel = float((d[big] / b.abs()[big]).max()) if big.any() else 0.0
    return float(d.max()), float(d.max()) / mx if mx > 0 else 0.0, rel


# --------------------------------------------------------------------------------------------

def build_variant(name, spec, out_dir, report):
    cfg = {k: v for k, v in spec.items() if k not in ("seed", "extra")}
    g = torch.Generator().manual_seed(spec["seed"])
    W32 = make_base_weights(cfg, g)
    A32 = make_adapter(cfg, g)
    ids = torch.randint(0, cfg["vocab_size"], (BATCH, SEQ), generator=g, dtype=torch.int64).int()
    labels = ids.clone()
    labels[0, :3] = -100
    labels[1, 5:8] = -100

    g64 = run_pipeline(cfg, W32, A32, ids, labels, torch.float64)

    # ---- files
    vdir = os.path.join(out_dir, name)
    adir = os.path.join(vdir, "adapter_init")
    os.makedirs(adir, exist_ok=True)
    config = {
        "architectures": cfg["architectures"],
        "model_type": cfg["model_type"],
        "hidden_size": cfg["hidden_size"],
        "intermediate_size": cfg["intermediate_size"],
        "num_hidden_layers": cfg["num_hidden_layers"],
        "num_attention_heads": cfg["num_attention_heads"],
        "num_key_value_heads": cfg["num_key_value_heads"],
        "head_dim": cfg["head_dim"],
        "vocab_size": cfg["vocab_size"],
        "rms_norm_eps": cfg["rms_norm_eps"],
        "rope_theta": cfg["rope_theta"],
        "rope_scaling": cfg["rope_scaling"],
        "max_position_embeddings": cfg["max_position_embeddings"],
        "tie_word_embeddings": cfg["tie_word_embeddings"],
        "hidden_act": "silu",
        "attention_bias": cfg["attention_bias"],
        "torch_dtype": "float32",
        "bos_token_id": cfg["bos_token_id"],
        "eos_token_id": cfg["eos_token_id"],
        "initializer_range": 0.02,
        "use_cache": True,
    }
    config.update(spec["extra"])
    write_json(os.path.join(vdir, "config.json"), config)
    write_safetensors(os.path.join(vdir, "model.safetensors"), W32, {"format": "pt"})
    write_json(os.path.join(adir, "adapter_config.json"), {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": R,
        "lora_alpha": LORA_ALPHA,
        "lora_dropout": 0.0,
        "target_modules": TARGETS,
        "use_rslora": False,
        "use_dora": False,
        "bias": "none",
        "fan_in_fan_out": False,
        "base_model_name_or_path": f"golden/{name}",
        "rank_pattern": {},
        "alpha_pattern": {},
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "revision": None,
    })
    write_safetensors(os.path.join(adir, "adapter_model.safetensors"), A32, {"format": "pt"})
    gold = {"input_ids": ids, "labels": labels}
    gold.update({k: v.float() for k, v in g64.items()})
    write_safetensors(os.path.join(vdir, "golden.safetensors"), gold, {
        "format": "pt",
        "variant": name,
        "lora_scaling": str(SCALING),
        "optimizer": f"AdamW lr={LR} betas={BETAS} eps={ADAM_EPS} weight_decay={WEIGHT_DECAY}",
        "clip_grad_norm": str(MAX_GRAD_NORM),
        "steps": str(STEPS),
        "computed_in": "float64, stored as float32",
    })

    if not report:
        return
    # ---- self-checks
    print(f"== {name}")
    for fname, ref in (("golden.safetensors", gold), ("model.safetensors", W32),
                       (os.path.join("adapter_init", "adapter_model.safetensors"), A32)):
        back = read_safetensors(os.path.join(vdir, fname))
        assert sorted(back) == sorted(ref) and all(back[k].equal(ref[k]) for k in ref), fname
    for lora in (False, True):
        ref = numpy_forward(cfg, W32, ids, A32 if lora else None)
        key = "logits_lora" if lora else "logits_base"
        d = float((torch.from_numpy(ref) - g64[key]).abs().max())
        print(f"  numpy loop forward vs torch ({key}): max abs diff {d:.3e}")
        assert d < 1e-10, d
        if lora:
            dl = abs(numpy_loss(ref, labels) - float(g64["loss_lora"]))
            print(f"  numpy loss vs torch loss: {dl:.3e}")
            assert dl < 1e-10
    fd = finite_diff_check(cfg, W32, A32, ids, labels, g64)
    print(f"  finite-difference vs autograd grads: worst rel err {fd:.3e}")
    assert fd < 1e-6, fd
    ml, mn, mp = manual_train(cfg, W32, A32, ids, labels)
    dtr = max(max(abs(a - float(b)) for a, b in zip(ml, g64["losses"])),
              max(abs(a - float(b)) for a, b in zip(mn, g64["grad_norms"])),
              max(float((mp[k] - g64["final." + k]).abs().max()) for k in mp))
    print(f"  hand-written clip+AdamW vs torch: max abs diff {dtr:.3e}")
    assert dtr < 1e-12, dtr
    print(f"  loss_lora {float(g64['loss_lora']):.6f}  ln(V) {math.log(cfg['vocab_size']):.6f}")
    print("  losses     " + " ".join(f"{float(x):.6f}" for x in g64["losses"]))
    print("  grad_norms " + " ".join(f"{float(x):.6f}" for x in g64["grad_norms"]))
    assert all(float(g64["losses"][i + 1]) < float(g64["losses"][i]) for i in range(STEPS - 1))
    dlb = float((g64["logits_lora"] - g64["logits_base"]).abs().max())
    print(f"  max |logits_lora - logits_base| = {dlb:.3e} (max |logits_base| = "
          f"{float(g64['logits_base'].abs().max()):.3e})")
    assert dlb > 1e-4
    inv = rope_inv_freq(cfg, torch.float64)
    inv0 = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, cfg["head_dim"], 2,
                                                      dtype=torch.float64) / cfg["head_dim"]))
    print("  inv_freq  " + " ".join(f"{float(x):.6g}" for x in inv))
    if cfg["rope_scaling"] is not None:
        print("  (unscaled " + " ".join(f"{float(x):.6g}" for x in inv0) + ")")
    gmax = max(float(g64[k].abs().max()) for k in g64 if k.startswith("grad."))
    print(f"  max |grad| {gmax:.3e}")

    # ---- float32 vs float64
    g32 = run_pipeline(cfg, W32, A32, ids, labels, torch.float32)
    print("  float32 run vs float64 golden: max_abs  max_abs/max|ref|  max_elem_rel(|ref|>=1e-3 max)")
    groups = {
        "logits_base": ["logits_base"],
        "logits_lora": ["logits_lora"],
        "loss_lora": ["loss_lora"],
        "grad.*": [k for k in g64 if k.startswith("grad.")],
        "losses": ["losses"],
        "grad_norms": ["grad_norms"],
        "final.*": [k for k in g64 if k.startswith("final.")],
    }
    for gname, ks in groups.items():
        st = [diff_stats(g32[k], g64[k]) for k in ks]
        print(f"    {gname:12s} {max(s[0] for s in st):.3e}  {max(s[1] for s in st):.3e}  "
              f"{max(s[2] for s in st):.3e}")
    # final weights relative to the total change they went through
    chg = max(float((g64["final." + k[5:]] - A32[k[5:]].double()).abs().max())
              for k in groups["grad.*"])
    print(f"    (max |final - init| = {chg:.3e})")
    gabs = torch.cat([g64[k].flatten() for k in groups["grad.*"]]).abs()
    print(f"  smallest |grad| element {float(gabs.min()):.3e}; elements with |grad| < 1e-6: "
          f"{int((gabs < 1e-6).sum())} of {gabs.numel()}")
    for lora in (False, True):
        key = "logits_lora" if lora else "logits_base"
        ref32 = numpy_forward(cfg, W32, ids, A32 if lora else None, dt=np.float32)
        assert ref32.dtype == np.float32
        st = diff_stats(torch.from_numpy(ref32), g64[key])
        print(f"  float32 numpy loop forward vs golden {key}: max_abs {st[0]:.3e} "
              f"max_abs/max|ref| {st[1]:.3e} max_elem_rel {st[2]:.3e}")
        if lora:
            l32 = numpy_loss(ref32.astype(np.float64), labels)
            print(f"  (its loss vs loss_lora: {abs(l32 - float(g64['loss_lora'])):.3e})")
    for sigma in (3e-8, 1e-7, 3e-7, 1e-6):
        nl, nn, npar = manual_train(cfg, W32, A32, ids, labels, grad_noise=sigma, noise_seed=7)
        dall = torch.cat([(npar[k] - g64["final." + k]).abs().flatten() for k in npar])
        dls = max(abs(a - float(b)) for a, b in zip(nl, g64["losses"]))
        print(f"  grad noise sigma {sigma:.0e} each step -> |final diff| max {float(dall.max()):.3e}"
              f" p99.9 {float(dall.quantile(0.999)):.3e} p99 {float(dall.quantile(0.99)):.3e};"
              f" max |losses diff| {dls:.3e}")
    d32 = torch.cat([(g32[k].double() - g64[k]).abs().flatten() for k in groups["final.*"]])
    print(f"  float32 run |final diff|: max {float(d32.max()):.3e} p99.9 "
          f"{float(d32.quantile(0.999)):.3e} p99 {float(d32.quantile(0.99)):.3e}")
    # what a tolerance on final.* has to resolve: the whole weight-decay contribution
    _, _, nowd = manual_train(cfg, W32, A32, ids, labels, weight_decay=0.0)
    dwd = max(float((nowd[k] - g64["final." + k]).abs().max()) for k in nowd)
    print(f"  effect of weight_decay on final.*: max |final(wd=0.01) - final(wd=0)| {dwd:.3e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/data/golden")
    ap.add_argument("--no-report", action="store_true",
                    help="skip self-checks and the float32-vs-float64 report")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)
    for name, spec in VARIANTS.items():
        build_variant(name, spec, args.out, not args.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
