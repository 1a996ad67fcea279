#!/usr/bin/env python3
"""PyTorch reference for attnlab's gla and rwkv7 mixers, RWKV's channel mix
(`mlp: rwkv_cmix`) and the decoder LM around them, written from the papers
(Yang et al. 2024, GLA; Peng et al. 2025, RWKV-7) and flash-linear-attention's
layer definitions (fla/layers/gla.py, fla/layers/rwkv7.py, RWKV7FeedForward),
independent of attnlab's C. Parameter names, shapes and initialisations are
attnlab's (models/gla.c, models/rwkv7.c, models/model.c).

The cores are written here from their definitions, token by token
(`gla_recurrent`, `dplr_recurrent`) and chunkwise (`dplr_chunk`, pairwise
log-decays masked before exp, the low-rank reads by a triangular solve);
tests/ref/gen_gla_rwkv_layers.py holds both against flash-linear-attention's
naive reference ops (fla/ops/gla/naive.py, fla/ops/generalized_delta_rule/
dplr/naive.py) before it writes the golden file.

Training comparison (never run by the tests):

    build/bench/dump_task EXPERIMENT.yaml RUN_INDEX /tmp/run.h5
    /usr/bin/python3 bench/torch_gla_rwkv.py train /tmp/run.h5 [--seed S] [--threads 2]

trains the run's model (its resolved YAML: d_model, layers, mixer options,
MLP, optimiser, schedule) on the dumped examples in the same order and prints
one line `torch run=... seed=... eval_loss=... eval_accuracy=... bits_per_byte=...
tokens_per_second=...`. The same model around the mixers as attnlab:
embedding, pre-norm RMSNorm blocks, final RMSNorm, LM head (optionally tied),
cross-entropy over the labelled positions; AdamW with attnlab's schedule
(linear warm-up, cosine to min_lr_ratio), weight decay on matrices only,
global-norm clipping.
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE = -100
RWKV7_W_SCALE = math.exp(-0.5)


# ---- cores (fla conventions: [B,T,H,D], state S [B,H,K,V]) -------------------------


def gla_recurrent(q, k, v, gk, scale=None, h0=None):
    """S_t = diag(exp gk_t) S_{t-1} + k_t v_t^T,  o_t = S_t^T (scale q_t)."""
    return dplr_recurrent(q, k, v, None, None, gk, scale, h0)


def dplr_recurrent(q, k, v, a, b, gk, scale=None, h0=None):
    """S_t = diag(exp gk_t) S_{t-1} + k_t v_t^T + b_t (a_t^T S_{t-1}),  o_t = S_t^T (scale q_t)."""
    B, T, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    S = q.new_zeros(B, H, K, v.shape[-1]) if h0 is None else h0
    outs = []
    for t in range(T):
        Sn = S * gk[:, t].exp()[..., None] + k[:, t][..., None] * v[:, t][..., None, :]
        if a is not None:
            u = torch.einsum("bhk,bhkv->bhv", a[:, t], S)
            Sn = Sn + b[:, t][..., None] * u[..., None, :]
        S = Sn
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    return torch.stack(outs, 1), S


def dplr_chunk(q, k, v, a, b, gk, scale=None, chunk=32, h0=None):
    """The chunkwise form of dplr_recurrent (a = b = None: gla). In a chunk
    with inclusive cumulative log-decays c and start state S0:
        Aqk[r,j] = sum_d q k exp(c_r - c_j)  (j <= r),  Aqb likewise with b
        Aak[r,j] = sum_d a k exp(c_r - g_r - c_j)  (j < r),  Aab likewise with b
        U = (I - Aab)^-1 ((a * exp(c - g)) S0 + Aak V)
        O = (q * exp c) S0 + Aqk V + Aqb U
        S1 = exp(c_n) S0 + (k * exp(c_n - c))^T V + (b * exp(c_n - c))^T U
    Exponents above the diagonal are set to -inf BEFORE exp (no overflow, no
    NaN gradient)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    lr = a is not None
    tr = lambda x: x.transpose(1, 2)  # noqa: E731  [B,H,T,D]
    q, k, v, gk = tr(q) * scale, tr(k), tr(v), tr(gk)
    if lr:
        a, b = tr(a), tr(b)
    S = q.new_zeros(B, H, K, V) if h0 is None else h0
    outs = []
    for s0 in range(0, T, chunk):
        s1 = min(T, s0 + chunk)
        n = s1 - s0
        qc, kc, vc, gc = q[:, :, s0:s1], k[:, :, s0:s1], v[:, :, s0:s1], gk[:, :, s0:s1]
        c = gc.cumsum(2)
        incl = torch.ones(n, n, dtype=torch.bool).tril()[:, :, None]
        strict = torch.ones(n, n, dtype=torch.bool).tril(-1)[:, :, None]
        e_incl = (c[:, :, :, None] - c[:, :, None]).masked_fill(~incl, float("-inf")).exp()
        Aqk = torch.einsum("bhrd,bhjd,bhrjd->bhrj", qc, kc, e_incl)
        O = (qc * c.exp()) @ S + Aqk @ vc
        last = c[:, :, -1:]
        Snew = last.transpose(-1, -2).exp() * S + (kc * (last - c).exp()).transpose(-1, -2) @ vc
        if lr:
            ac, bc = a[:, :, s0:s1], b[:, :, s0:s1]
            cx = c - gc
            e_strict = (cx[:, :, :, None] - c[:, :, None]).masked_fill(~strict, float("-inf")).exp()
            Aqb = torch.einsum("bhrd,bhjd,bhrjd->bhrj", qc, bc, e_incl)
            Aak = torch.einsum("bhrd,bhjd,bhrjd->bhrj", ac, kc, e_strict)
            Aab = torch.einsum("bhrd,bhjd,bhrjd->bhrj", ac, bc, e_strict)
            X = (ac * cx.exp()) @ S + Aak @ vc
            eye = torch.eye(n, dtype=q.dtype)
            U = torch.linalg.solve_triangular(eye - Aab, X, upper=False, unitriangular=True)
            O = O + Aqb @ U
            Snew = Snew + (bc * (last - c).exp()).transpose(-1, -2) @ U
        S = Snew
        outs.append(O)
    return torch.cat(outs, 2).transpose(1, 2), S


# ---- parameters with attnlab's names ------------------------------------------------


class Named(nn.Module):
    """Parameters registered under attnlab's names ('gk_proj.down' is stored
    as 'gk_proj__down')."""

    def P(self, name, *shape):
        p = nn.Parameter(torch.zeros(*shape))
        self.register_parameter(name.replace(".", "__"), p)
        return p

    def W(self, name):
        return getattr(self, name.replace(".", "__"))

    def named(self, prefix=""):
        return [(prefix + n.replace("__", "."), p) for n, p in self.named_parameters()]


def rmsnorm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def short_conv(x, w):
    """Causal depthwise conv (weight [C, size], no bias) then SiLU; x [B,T,C]."""
    T, size = x.shape[1], w.shape[1]
    y = F.conv1d(x.transpose(1, 2), w[:, None, :], padding=size - 1, groups=x.shape[-1])
    return F.silu(y[..., :T].transpose(1, 2))


def orthogonal_(p, gain):
    with torch.no_grad():
        nn.init.orthogonal_(p, gain=gain)


def token_delta(x):
    """shift(x) - x, shift(x)_t = x_{t-1} (zero at t = 0)."""
    return F.pad(x, (0, 0, 1, -1)) - x


# ---- the mixers ----------------------------------------------------------------------


class GLA(Named):
    """models/gla.c: fla's GatedLinearAttention."""

    def __init__(self, d, H, expand_k=0.5, expand_v=1.0, gate_low_rank_dim=16, gate_logit_normalizer=16,
                 short_conv=False, conv_size=4, output_gate="swish", clamp_min=0.0, chunk_size=64, eps=1e-5,
                 core="chunk", **_):
        super().__init__()
        HK, HV = int(d * expand_k), int(d * expand_v)
        self.H, self.K, self.V, self.chunk, self.eps = H, HK // H, HV // H, chunk_size, eps
        self.normalizer, self.clamp_min, self.gate, self.core = gate_logit_normalizer, clamp_min, output_gate, core
        self.conv = short_conv
        self.P("q_proj", HK, d), self.P("k_proj", HK, d), self.P("v_proj", HV, d)
        if short_conv:
            self.P("q_conv", HK, conv_size), self.P("k_conv", HK, conv_size), self.P("v_conv", HV, conv_size)
        self.P("gk_proj.down", gate_low_rank_dim, d), self.P("gk_proj.up", HK, gate_low_rank_dim)
        self.P("gk_proj.bias", HK)
        if output_gate != "none":
            self.P("g_proj", HV, d)
        self.P("g_norm", self.V)
        self.P("o_proj", d, HV)

    def init(self, std, n_layers, layer):
        with torch.no_grad():
            for n, p in self.named():
                if n == "o_proj":
                    p.normal_(0, std / math.sqrt(2 * n_layers))
                elif n == "g_norm":
                    p.fill_(1)
                elif n == "gk_proj.bias":
                    p.zero_()
                else:
                    p.normal_(0, std)

    def forward(self, x, v_first=None):
        B, T, _ = x.shape
        H, K, V = self.H, self.K, self.V
        proj = lambda n: (short_conv(x @ self.W(n + "_proj").T, self.W(n + "_conv")) if self.conv  # noqa: E731
                          else x @ self.W(n + "_proj").T)
        q, k, v = proj("q").view(B, T, H, K), proj("k").view(B, T, H, K), proj("v").view(B, T, H, V)
        gk = F.logsigmoid(x @ self.W("gk_proj.down").T @ self.W("gk_proj.up").T + self.W("gk_proj.bias"))
        gk = gk / self.normalizer
        if self.clamp_min < 0:
            gk = gk.clamp_min(self.clamp_min)
        gk = gk.view(B, T, H, K)
        if self.core == "chunk":
            o, _ = dplr_chunk(q, k, v, None, None, gk, chunk=self.chunk)
        else:
            o, _ = gla_recurrent(q, k, v, gk)
        o = rmsnorm(o, self.W("g_norm"), self.eps)
        if self.gate != "none":
            g = (x @ self.W("g_proj").T).view(B, T, H, V)
            o = o * (F.silu(g) if self.gate == "swish" else torch.sigmoid(g))
        return o.reshape(B, T, H * V) @ self.W("o_proj").T, v_first


def lora_rank(opt, x):
    return opt if opt > 0 else max(32, 32 * round(x / 32))  # Python's round: half to even


class RWKV7(Named):
    """models/rwkv7.c: fla's RWKV7Attention (fuse_norm as in its model config:
    l2_norm with eps 1e-6, GroupNorm with bias)."""

    def __init__(self, d, H, head_dim=0, chunk_size=64, decay_low_rank_dim=0, a_low_rank_dim=0,
                 v_low_rank_dim=0, gate_low_rank_dim=0, first=True, eps=1e-5, core="chunk", **_):
        super().__init__()
        K = head_dim or d // H
        self.H, self.K, self.chunk, self.first, self.core = H, K, chunk_size, first, core
        self.gn_eps = K * eps
        f, sd = K / 64, math.sqrt(d)
        Rw, Ra = lora_rank(decay_low_rank_dim, 2.5 * sd * f), lora_rank(a_low_rank_dim, 2.5 * sd * f)
        Rv, Rg = lora_rank(v_low_rank_dim, 1.7 * sd * f), lora_rank(gate_low_rank_dim, 5 * sd)
        HK = H * K
        for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            self.P(n, d)
        self.P("r_proj", HK, d), self.P("k_proj", HK, d), self.P("v_proj", HK, d)
        loras = [("w_lora", Rw, True), ("a_lora", Ra, True), ("g_lora", Rg, False)]
        if not first:
            loras.insert(2, ("v_lora", Rv, True))
        for n, R, bias in loras:
            self.P(n + ".down", R, d), self.P(n + ".up", HK, R)
            if bias:
                self.P(n + ".bias", HK)
        self.P("k_k", HK), self.P("k_a", HK), self.P("r_k", H, K)
        self.P("g_norm.weight", HK), self.P("g_norm.bias", HK)
        self.P("o_proj", d, HK)

    def init(self, std, n_layers, layer):
        """fla's initialisation (from RWKV-LM)."""
        d, K, N = self.W("x_r").shape[0], self.K, self.H * self.K
        r0 = layer / (n_layers - 1) if n_layers > 1 else 0.0
        r1 = 1 - layer / n_layers
        ddd = torch.arange(d, dtype=torch.float64) / d
        n = torch.arange(N, dtype=torch.float64)
        lin = n / (N - 1) - 0.5 if N > 1 else torch.zeros(N)
        h = (K - 1) / 2
        z = ((n % K) - h) / h if K > 1 else torch.zeros(N)
        zig = z * z.abs()
        www = -6 + 6 * (n / (N - 1) if N > 1 else torch.zeros(N)) ** (1 + r0 ** 0.3)
        with torch.no_grad():
            for name, e in (("x_r", 0.2), ("x_w", 0.9), ("x_k", 0.7), ("x_v", 0.7), ("x_a", 0.9), ("x_g", 0.2)):
                self.W(name).copy_(1 - ddd ** (e * r1))
            self.W("k_k").copy_(0.71 - 0.1 * lin)
            self.W("k_a").fill_(1.02)
            self.W("r_k").fill_(-0.04)
            self.W("w_lora.bias").copy_(www + 0.5 + 2.5 * zig)
            self.W("a_lora.bias").copy_(-0.19 + 0.3 * zig + 0.4 * lin)
            if not self.first:
                self.W("v_lora.bias").copy_(0.73 - 0.4 * lin)
            for lo in ("w_lora", "a_lora", "v_lora", "g_lora"):
                if hasattr(self, lo + "__down"):
                    self.W(lo + ".down").zero_()
                    out, rank = self.W(lo + ".up").shape
                    orthogonal_(self.W(lo + ".up"), 0.1 * (math.sqrt(rank / out) if rank > out else 1))
            orthogonal_(self.W("r_proj"), 1)
            orthogonal_(self.W("k_proj"), 0.1)
            orthogonal_(self.W("v_proj"), 1)
            self.W("o_proj").zero_()
            self.W("g_norm.weight").fill_(((layer + 1) / n_layers) ** 0.7)
            self.W("g_norm.bias").zero_()

    def lora(self, name, x, act=None):
        h = x @ self.W(name + ".down").T
        if act is not None:
            h = act(h)
        y = h @ self.W(name + ".up").T
        return y + self.W(name + ".bias") if hasattr(self, name + "__bias") else y

    def forward(self, x, v_first=None):
        B, T, _ = x.shape
        H, K = self.H, self.K
        delta = token_delta(x)
        xr, xw, xk, xv, xa, xg = (x + delta * self.W(n) for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"))
        r = xr @ self.W("r_proj").T
        w = -RWKV7_W_SCALE * torch.sigmoid(self.lora("w_lora", xw, torch.tanh))
        k = xk @ self.W("k_proj").T
        v = xv @ self.W("v_proj").T
        if self.first:
            v_first = v
        else:
            v = torch.lerp(v, v_first, torch.sigmoid(self.lora("v_lora", xv)))
        alpha = torch.sigmoid(self.lora("a_lora", xa))
        g = self.lora("g_lora", xg, torch.sigmoid)
        kk = (k * self.W("k_k")).view(B, T, H, K)
        kk = kk * torch.rsqrt(kk.pow(2).sum(-1, keepdim=True) + 1e-6)
        k = k.addcmul(k * (alpha - 1), self.W("k_a"))
        r, w, k, alpha = (t.view(B, T, H, K) for t in (r, w, k, alpha))
        v = v.view(B, T, H, K)
        if self.core == "chunk":
            o, _ = dplr_chunk(r, k, v, -kk, kk * alpha, w, scale=1.0, chunk=self.chunk)
        else:
            o, _ = dplr_recurrent(r, k, v, -kk, kk * alpha, w, scale=1.0)
        mu = o.mean(-1, keepdim=True)
        var = (o - mu).pow(2).mean(-1, keepdim=True)
        o = (o - mu) * torch.rsqrt(var + self.gn_eps)
        o = o * self.W("g_norm.weight").view(H, K) + self.W("g_norm.bias").view(H, K)
        bonus = (r * k * self.W("r_k")).sum(-1, keepdim=True) * v
        o = (o + bonus).reshape(B, T, H * K) * g
        return o @ self.W("o_proj").T, v_first


class CMix(Named):
    """RWKV's channel mix (models/rwkv7.h): relu(mix(x) key^T)^2 value^T."""

    def __init__(self, d, hidden):
        super().__init__()
        self.P("x_k", d), self.P("key", hidden, d), self.P("value", d, hidden)

    def init(self, n_layers, layer):
        d = self.W("x_k").shape[0]
        r1 = 1 - layer / n_layers
        with torch.no_grad():
            self.W("x_k").copy_(1 - (torch.arange(d, dtype=torch.float64) / d) ** (r1 ** 4))
            orthogonal_(self.W("key"), 1)
            self.W("value").zero_()

    def forward(self, x):
        xk = x + token_delta(x) * self.W("x_k")
        return torch.relu(xk @ self.W("key").T).square() @ self.W("value").T


class SwiGLU(Named):
    def __init__(self, d, hidden):
        super().__init__()
        self.P("w_gate", hidden, d), self.P("w_up", hidden, d), self.P("w_down", d, hidden)

    def init(self, std, n_layers):
        with torch.no_grad():
            self.W("w_gate").normal_(0, std), self.W("w_up").normal_(0, std)
            self.W("w_down").normal_(0, std / math.sqrt(2 * n_layers))

    def forward(self, x):
        return (F.silu(x @ self.W("w_gate").T) * (x @ self.W("w_up").T)) @ self.W("w_down").T


MIXERS = {"gla": GLA, "rwkv7": RWKV7}


class LM(nn.Module):
    """models/model.c: embedding, n_layers x [x += mixer(RMSNorm(x)); x += MLP(RMSNorm(x))],
    final RMSNorm, LM head (tied or not); no positions (the linear mixers use none)."""

    def __init__(self, vocab, d, layers, H, mlp="none", mlp_hidden=0, tie=False, options=None, eps=1e-5,
                 core="chunk"):
        super().__init__()
        options = options or {}
        self.eps, self.mlp, self.names, self.tie = eps, mlp, layers, tie
        self.tok_emb = nn.Parameter(torch.zeros(vocab, d))
        self.norm1 = nn.ParameterList(nn.Parameter(torch.ones(d)) for _ in layers)
        first = layers.index("rwkv7") if "rwkv7" in layers else -1
        self.mixers = nn.ModuleList(
            MIXERS[m](d, H, eps=eps, core=core, first=(i <= first), **options.get(m, {})) for i, m in enumerate(layers))
        if mlp != "none":
            self.norm2 = nn.ParameterList(nn.Parameter(torch.ones(d)) for _ in layers)
            self.mlps = nn.ModuleList((CMix if mlp == "rwkv_cmix" else SwiGLU)(d, mlp_hidden) for _ in layers)
        self.final_norm = nn.Parameter(torch.ones(d))
        if not tie:
            self.lm_head = nn.Parameter(torch.zeros(vocab, d))

    def named(self):
        """(attnlab name, parameter, weight decay?) triples."""
        out = [("tok_emb", self.tok_emb, False)]
        for i, m in enumerate(self.mixers):
            out.append((f"layers.{i}.norm1", self.norm1[i], False))
            out += [(n, p, p.dim() >= 2 and not n.endswith("r_k")) for n, p in m.named(f"layers.{i}.{self.names[i]}.")]
            if self.mlp != "none":
                out.append((f"layers.{i}.norm2", self.norm2[i], False))
                out += [(n, p, p.dim() >= 2) for n, p in self.mlps[i].named(f"layers.{i}.mlp.")]
        out.append(("final_norm", self.final_norm, False))
        if not self.tie:
            out.append(("lm_head", self.lm_head, True))
        return out

    def init(self, std, gen_seed):
        torch.manual_seed(gen_seed)
        L = len(self.mixers)
        with torch.no_grad():
            self.tok_emb.normal_(0, std)
            if not self.tie:
                self.lm_head.normal_(0, std)
        for i, m in enumerate(self.mixers):
            m.init(std, L, i)
            if self.mlp == "rwkv_cmix":
                self.mlps[i].init(L, i)
            elif self.mlp == "swiglu":
                self.mlps[i].init(std, L)

    def forward(self, tokens):
        x = self.tok_emb[tokens]
        v_first = None
        for i, m in enumerate(self.mixers):
            y, v_first = m(rmsnorm(x, self.norm1[i], self.eps), v_first)
            x = x + y
            if self.mlp != "none":
                x = x + self.mlps[i](rmsnorm(x, self.norm2[i], self.eps))
        x = rmsnorm(x, self.final_norm, self.eps)
        return x @ (self.tok_emb if self.tie else self.lm_head).T

    def loss(self, tokens, labels):
        logits = self(tokens)
        keep = labels != IGNORE
        sel = logits[keep]
        return F.cross_entropy(sel, labels[keep]), int((sel.argmax(-1) == labels[keep]).sum()), int(keep.sum())


# ---- training on a dumped run ---------------------------------------------------------


def schedule(t, cfg):
    lr, warm, total = cfg["lr"], cfg["warmup_steps"], cfg["steps"]
    if warm > 0 and t < warm:
        return lr * (t + 1) / warm
    floor = cfg["min_lr_ratio"] * lr
    if cfg["schedule"] == "constant":
        return lr
    assert cfg["schedule"] == "cosine", cfg["schedule"]
    last = total - 1
    u = 0.0 if t <= warm else 1.0 if t >= last else (t - warm) / (last - warm)
    return floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * u))


def model_of(cfg, chunk=0, core="chunk"):
    """The run's LM; chunk > 0 replaces the chunk length of the PyTorch core
    (the same function: only the speed changes)."""
    m = cfg["model"]
    assert m.get("position", "nope") in ("nope", "rope"), "learned positions are not modelled here"
    opts = {k: v for k, v in m.get("attention", {}).items() if k in MIXERS}
    for o in opts.values():
        if "output_gate" in o:
            o["output_gate"] = str(o["output_gate"])
        if chunk > 0:
            o["chunk_size"] = chunk
    return LM(cfg["data"]["vocab_size"] if cfg["data"]["task"] != "text" else 256, m["d_model"], m["layers"],
              m["n_heads"], m["mlp"], m["mlp_hidden"], m["tie_embeddings"], opts, m["norm_eps"], core)


def evaluate(model, tok, lab, batch):
    model.eval()
    tot, lab_n, ok_n = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, tok.shape[0], batch):
            loss, ok, n = model.loss(tok[i:i + batch], lab[i:i + batch])
            tot += loss.item() * n
            lab_n += n
            ok_n += ok
    model.train()
    return tot / lab_n, ok_n / lab_n


def train(args):
    import h5py
    import yaml

    torch.set_num_threads(args.threads)
    with h5py.File(args.dump) as f:
        cfg = yaml.safe_load(f.attrs["config"])
        run = f.attrs["run"]
        run = run.decode() if isinstance(run, bytes) else run
        sep = "_" if "train_tokens" in f else "/"  # TEMP: both layouts while old dumps are in use
        tr_tok, tr_lab = (torch.from_numpy(f[f"train{sep}{n}"][...]).long() for n in ("tokens", "labels"))
        te_tok, te_lab = (torch.from_numpy(f[f"test{sep}{n}"][...]).long() for n in ("tokens", "labels"))
    tc = dict(cfg["train"])
    tc["steps"] = args.steps or tc["steps"]
    model = model_of(cfg, args.chunk, args.core)
    model.init(cfg["model"]["init_std"], args.seed)
    named = model.named()
    groups = [{"params": [p for _, p, wd in named if wd], "weight_decay": tc["weight_decay"]},
              {"params": [p for _, p, wd in named if not wd], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=tc["lr"], betas=(tc["beta1"], tc["beta2"]), eps=tc["eps"])
    B, T = tc["batch_size"], tr_tok.shape[1]
    t0, first = time.perf_counter(), None
    for step in range(tc["steps"]):
        for gr in opt.param_groups:
            gr["lr"] = schedule(step, tc)
        sl = slice(step * B, (step + 1) * B)
        loss, _, _ = model.loss(tr_tok[sl], tr_lab[sl])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc["grad_clip"])
        opt.step()
        first = loss.item() if first is None else first
        if args.log and step % args.log == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
    secs = time.perf_counter() - t0
    ev_loss, ev_acc = evaluate(model, te_tok, te_lab, B)
    bpb = ev_loss / math.log(2) if cfg["data"]["task"] == "text" else float("nan")
    print(f"torch run={run.replace(' ', '_')} seed={args.seed} steps={tc['steps']} eval_loss={ev_loss:.4f} "
          f"eval_accuracy={ev_acc:.4f} bits_per_byte={bpb:.4f} first_loss={first:.4f} "
          f"tokens_per_second={tc['steps'] * B * T / secs:.0f} seconds={secs:.0f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a dumped run (bench/dump_task)")
    t.add_argument("dump")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--steps", type=int, default=0, help="0: the run's")
    t.add_argument("--log", type=int, default=0, help="print the loss every N steps")
    t.add_argument("--chunk", type=int, default=0, help="chunk length of the PyTorch core (0: the run's)")
    t.add_argument("--core", default="chunk", choices=["chunk", "recurrent"], help="the PyTorch core's form")
    args = ap.parse_args()
    if args.cmd == "train":
        train(args)


if __name__ == "__main__":
    main()
