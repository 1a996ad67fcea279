"""Checks attnlab exports (./export CHECKPOINT DIR) against flash-linear-attention.

For each DIR: builds the model of DIR/config.json in PyTorch, written here from
flash-linear-attention's definitions (fla/models/<type>/modeling_<type>.py for the
blocks, fla/layers/<layer>.py for the layers, fla/modules for RMSNorm, the gated
RMSNorms, ShortConvolution, GatedMLP and the rotary embedding), with fla's naive
reference ops for the recurrent cores (fla/ops/{delta_rule,gated_delta_rule,kda,
simple_gla,gla,linear_attn,retention}/naive.py, imported from a checkout of fla's sources:
the real package needs triton; Mamba-1's selective scan token by token as mamba_ssm's
selective_scan_ref, which fla's Mamba layer falls back to); loads DIR/model.safetensors by fla's tensor names
(every tensor of the file used, every parameter of the model given, shapes equal);
runs the input_ids of DIR/attnlab_check.safetensors in float64 and compares the
logits with attnlab's (float32): the worst per-position relative error
|z_attnlab - z_fla| / |z_fla| over the vocabulary must stay below 1e-4.

    git --git-dir=<fla mirror> archive HEAD fla/ops | tar -x -C /tmp/fla
    /usr/bin/python3 tests/ref/check_export.py DIR [DIR ...] [--fla /tmp/fla]

Prints one line per export and exits 1 if one fails; skipped (exit 0 with a
message) when torch is absent. The tests never run this script.
"""
import importlib.util
import json
import math
import os
import struct
import sys
import types

import numpy as np

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("check_export: torch is not installed; skipped")
    sys.exit(0)

torch.set_default_dtype(torch.float64)
TOL = 1e-4
NAIVE = {}
BACKBONE = ("mamba", "mamba2")  # models named backbone.*, blocks without MLP


def naive(fla_root, op):
    """fla/ops/<op>/naive.py, imported on its own (einops shimmed if missing: the
    recurrent references do not use it)."""
    if op not in NAIVE:
        if "einops" not in sys.modules:
            try:
                import einops  # noqa: F401
            except ImportError:
                shim = types.ModuleType("einops")
                shim.rearrange = shim.repeat = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("einops shim"))
                sys.modules["einops"] = shim
        path = os.path.join(fla_root, "fla", "ops", op, "naive.py")
        spec = importlib.util.spec_from_file_location("fla_naive_" + op.replace("/", "_"), path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        NAIVE[op] = mod
    return NAIVE[op]


# ---- safetensors (written by attnlab's tools/export.c) -------------------------------

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=np.dtype(DTYPES[e["dtype"]]).newbyteorder("<"))
        out[name] = torch.from_numpy(arr.reshape(e["shape"]).copy())
    return out


# ---- fla's modules ---------------------------------------------------------------------


class RMSNorm(nn.Module):  # fla.modules.RMSNorm
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class RMSNormGated(RMSNorm):  # fla.modules.FusedRMSNormGated: norm(x) * w * act(g)
    def __init__(self, d, eps=1e-5, activation="swish"):
        super().__init__(d, eps)
        self.act = torch.sigmoid if activation == "sigmoid" else F.silu

    def forward(self, x, g):
        return super().forward(x) * self.act(g)


class GatedMLP(nn.Module):  # fla.modules.GatedMLP (swish)
    def __init__(self, d, inter):
        super().__init__()
        self.gate_proj = nn.Linear(d, inter, bias=False)
        self.up_proj = nn.Linear(d, inter, bias=False)
        self.down_proj = nn.Linear(inter, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class ShortConvolution(nn.Conv1d):  # fla.modules.ShortConvolution: causal depthwise conv, SiLU
    def __init__(self, channels, kernel, activation=True):
        super().__init__(channels, channels, kernel, groups=channels, padding=kernel - 1, bias=False)
        self.activation = activation

    def forward(self, x):
        y = super().forward(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)
        return F.silu(y) if self.activation else y


def rotary(x, base, offset=0):
    """fla.modules.RotaryEmbedding (non-interleaved) over the last dim of x [B,T,H,D]."""
    D = x.shape[-1]
    inv = 1.0 / (base ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    t = torch.arange(offset, offset + x.shape[1], dtype=torch.float64)
    ang = t[:, None] * inv[None, :]
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def causal_softmax_attention(q, k, v, scale, window=None):
    """flash_attn_func(causal=True, window_size=(window-1, 0)); q [B,T,H,D], k, v [B,T,Hkv,*]."""
    B, T, H, _ = q.shape
    g = H // k.shape[2]
    k, v = k.repeat_interleave(g, 2), v.repeat_interleave(g, 2)
    s = torch.einsum("bthd,bshd->bhts", q, k) * scale
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    mask = j > i
    if window:
        mask = mask | (i - j > window - 1)
    p = s.masked_fill(mask, float("-inf")).softmax(-1)
    return torch.einsum("bhts,bshd->bthd", p, v)


def l2norm(x, eps=1e-6):  # fla's use_qk_l2norm_in_kernel
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def heads(x, d):
    return x.view(*x.shape[:-1], -1, d)


# ---- fla's layers ------------------------------------------------------------------------


class Attention(nn.Module):  # fla/layers/attn.py
    def __init__(self, hidden, num_heads, num_kv_heads, window, rope_theta, **_):
        super().__init__()
        self.hd, self.window, self.theta = hidden // num_heads, window, rope_theta
        kv = (num_kv_heads or num_heads) * self.hd
        self.q_proj = nn.Linear(hidden, hidden, bias=False)
        self.k_proj = nn.Linear(hidden, kv, bias=False)
        self.v_proj = nn.Linear(hidden, kv, bias=False)
        self.o_proj = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x):
        q, k, v = (heads(p(x), self.hd) for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = rotary(q, self.theta), rotary(k, self.theta)
        o = causal_softmax_attention(q, k, v, self.hd ** -0.5, self.window)
        return self.o_proj(o.flatten(2))


class DeltaFamily(nn.Module):
    """fla/layers/delta_net.py, gated_deltanet.py, kda.py."""

    def __init__(self, kind, c, fla):
        super().__init__()
        d, H = c["hidden_size"], c["num_heads"]
        self.kind, self.fla, self.H, self.conv = kind, fla, H, c.get("use_short_conv", True)
        if kind == "delta_net":
            self.K = int(d * c["expand_k"]) // H
            self.V = int(d * c["expand_v"]) // H
        else:
            self.K = c["head_dim"]
            self.V = int(self.K * c["expand_v"])
        self.neg = c.get("allow_neg_eigval", False)
        self.lower_bound = c.get("lower_bound")
        self.gate = "sigmoid" if kind == "kda" else ("swish" if c.get("use_gate") else None)
        HK, HV, cs = H * self.K, H * self.V, c.get("conv_size", 4)
        self.q_proj = nn.Linear(d, HK, bias=False)
        self.k_proj = nn.Linear(d, HK, bias=False)
        self.v_proj = nn.Linear(d, HV, bias=False)
        self.b_proj = nn.Linear(d, H, bias=False)
        if self.conv:
            self.q_conv1d, self.k_conv1d, self.v_conv1d = ShortConvolution(HK, cs), ShortConvolution(HK, cs), ShortConvolution(HV, cs)
        if kind == "kda":
            self.f_proj = nn.Sequential(nn.Linear(d, self.V, bias=False), nn.Linear(self.V, HK, bias=False))
            self.g_proj = nn.Sequential(nn.Linear(d, self.V, bias=False), nn.Linear(self.V, HV, bias=True))
            self.dt_bias = nn.Parameter(torch.zeros(HK))
        elif kind == "gated_deltanet":
            self.a_proj = nn.Linear(d, H, bias=False)
            self.dt_bias = nn.Parameter(torch.zeros(H))
        if kind != "delta_net":
            self.A_log = nn.Parameter(torch.zeros(H))
        if self.gate == "swish":
            self.g_proj = nn.Linear(d, HV, bias=False)
        eps = c["norm_eps"]
        self.o_norm = RMSNormGated(self.V, eps, self.gate) if self.gate else RMSNorm(self.V, eps)
        self.o_proj = nn.Linear(HV, d, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        H, K, V = self.H, self.K, self.V
        if self.conv:
            q, k, v = self.q_conv1d(self.q_proj(x)), self.k_conv1d(self.k_proj(x)), self.v_conv1d(self.v_proj(x))
        else:
            q, k, v = F.silu(self.q_proj(x)), F.silu(self.k_proj(x)), F.silu(self.v_proj(x))
        q, k, v = l2norm(heads(q, K)), l2norm(heads(k, K)), heads(v, V)
        beta = self.b_proj(x).sigmoid() * (2.0 if self.neg else 1.0)
        if self.kind == "delta_net":
            tr = lambda t: t.transpose(1, 2)  # noqa: E731  [B,H,T,*]
            o, _ = naive(self.fla, "delta_rule").delta_rule_recurrence(tr(q), tr(k), tr(v), tr(beta))
            o = tr(o)
        elif self.kind == "gated_deltanet":
            g = -self.A_log.exp() * F.softplus(self.a_proj(x) + self.dt_bias)
            o, _ = naive(self.fla, "gated_delta_rule").naive_recurrent_gated_delta_rule(q, k, v, beta, g)
        else:
            f = heads(self.f_proj(x), K) + self.dt_bias.view(H, K)
            A = self.A_log.exp()[:, None]
            g = -A * F.softplus(f) if self.lower_bound is None else self.lower_bound * torch.sigmoid(A * f)
            o, _ = naive(self.fla, "kda").naive_recurrent_kda(q, k, v, g, beta)
        o = self.o_norm(o, heads(self.g_proj(x), V)) if self.gate else self.o_norm(o)
        return self.o_proj(o.flatten(2))


class Mamba2(nn.Module):  # fla/layers/mamba2.py (n_groups 1, no biases)
    def __init__(self, c, fla):
        super().__init__()
        d = c["hidden_size"]
        self.fla, self.P, self.N = fla, c["head_dim"], c["state_size"]
        self.I = c["expand"] * d
        self.H = self.I // self.P
        conv_dim = self.I + 2 * self.N
        self.in_proj = nn.Linear(d, self.I + conv_dim + self.H, bias=False)
        self.conv1d = ShortConvolution(conv_dim, c["conv_kernel"])
        self.dt_bias = nn.Parameter(torch.zeros(self.H))
        self.A_log = nn.Parameter(torch.zeros(self.H))
        self.D = nn.Parameter(torch.ones(self.H))
        self.norm = RMSNorm(self.I, c["norm_eps"])  # RMSNormGated, norm_before_gate False
        self.out_proj = nn.Linear(self.I, d, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        z, xBC, dt = self.in_proj(x).split([self.I, self.I + 2 * self.N, self.H], -1)
        xs, Bm, Cm = self.conv1d(xBC).split([self.I, self.N, self.N], -1)
        dt = F.softplus(dt + self.dt_bias)
        A = -self.A_log.exp()
        xs = heads(xs, self.P)
        rep = lambda t: t[:, :, None, :].expand(B, T, self.H, self.N)  # noqa: E731
        y, _ = naive(self.fla, "simple_gla").naive_recurrent_simple_gla(rep(Cm), rep(Bm), xs * dt[..., None], A * dt, scale=1.0)
        y = (y + xs * self.D[:, None]).flatten(2)
        return self.out_proj(self.norm(y * F.silu(z)))


def selective_scan(u, delta, A, Bm, Cm, D, z):
    """mamba_ssm's selective_scan_ref (delta_softplus done by the caller): token by token,
    h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t, y_t = C_t h_t + D u_t, times silu(z).
    u, delta, z [B,T,I]; A [I,N]; Bm, Cm [B,T,N]."""
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    ys = []
    for t in range(u.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[..., None] * Bm[:, t, None, :]
        ys.append(torch.einsum("bin,bn->bi", h, Cm[:, t]))
    return (torch.stack(ys, 1) + u * D) * F.silu(z)


class Mamba(nn.Module):  # fla/layers/mamba.py (Mamba-1; use_bias False, use_conv_bias True)
    def __init__(self, c, fla):
        super().__init__()
        d, self.N, self.R, cs = c["hidden_size"], c["state_size"], c["dt_rank"], c["conv_kernel"]
        self.I = int(c["expand"] * d)
        self.in_proj = nn.Linear(d, 2 * self.I, bias=False)
        self.conv1d = nn.Conv1d(self.I, self.I, cs, groups=self.I, padding=cs - 1, bias=c.get("use_conv_bias", True))
        self.x_proj = nn.Linear(self.I, self.R + 2 * self.N, bias=False)
        self.dt_proj = nn.Linear(self.R, self.I, bias=True)
        self.A_log = nn.Parameter(torch.zeros(self.I, self.N))
        self.D = nn.Parameter(torch.ones(self.I))
        self.out_proj = nn.Linear(self.I, d, bias=False)

    def forward(self, x):
        T = x.shape[1]
        xs, z = self.in_proj(x).chunk(2, -1)
        xs = F.silu(self.conv1d(xs.transpose(1, 2))[..., :T].transpose(1, 2))
        dt, Bm, Cm = self.x_proj(xs).split([self.R, self.N, self.N], -1)
        dt = F.softplus(self.dt_proj(dt))
        return self.out_proj(selective_scan(xs, dt, -self.A_log.exp(), Bm, Cm, self.D, z))


class LinearAttention(nn.Module):  # fla/layers/linear_attn.py (output norm rmsnorm)
    def __init__(self, c, fla):
        super().__init__()
        d, H = c["hidden_size"], c["num_heads"]
        self.fla, self.H = fla, H
        self.K, self.V = int(d * c["expand_k"]) // H, int(d * c["expand_v"]) // H
        self.fm = {"elu": lambda t: F.elu(t) + 1, "relu": F.relu, "identity": lambda t: t}[c["feature_map"]]
        self.normalize = c.get("norm_feature_map", False)
        self.q_proj = nn.Linear(d, H * self.K, bias=False)
        self.k_proj = nn.Linear(d, H * self.K, bias=False)
        self.v_proj = nn.Linear(d, H * self.V, bias=False)
        self.norm = RMSNorm(self.V, c["norm_eps"])
        self.o_proj = nn.Linear(H * self.V, d, bias=False)

    def forward(self, x):
        q, k = self.fm(heads(self.q_proj(x), self.K)), self.fm(heads(self.k_proj(x), self.K))
        v = heads(self.v_proj(x), self.V)
        o, _ = naive(self.fla, "linear_attn").naive_recurrent_linear_attn(q, k, v, normalize=self.normalize)
        return self.o_proj(self.norm(o).flatten(2))


class MultiScaleRetention(nn.Module):  # fla/layers/multiscale_retention.py (fuse_norm)
    def __init__(self, c, fla):
        super().__init__()
        d, H = c["hidden_size"], c["num_heads"]
        self.fla, self.H, self.gate = fla, H, c.get("use_output_gate", True)
        self.K, self.V = int(d * c["expand_k"]) // H, int(d * c["expand_v"]) // H
        self.q_proj = nn.Linear(d, H * self.K, bias=False)
        self.k_proj = nn.Linear(d, H * self.K, bias=False)
        self.v_proj = nn.Linear(d, H * self.V, bias=False)
        if self.gate:
            self.g_proj = nn.Linear(d, H * self.V, bias=False)
            self.g_norm_swish_gate = RMSNormGated(self.V, c["norm_eps"], "swish")
        else:
            self.g_norm = RMSNorm(self.V, c["norm_eps"])
        self.o_proj = nn.Linear(H * self.V, d, bias=False)

    def forward(self, x):
        q, k = rotary(heads(self.q_proj(x), self.K), 10000.0), rotary(heads(self.k_proj(x), self.K), 10000.0)
        v = heads(self.v_proj(x), self.V)
        tr = lambda t: t.transpose(1, 2)  # noqa: E731
        o = tr(naive(self.fla, "retention").naive_retention(tr(q), tr(k), tr(v)))
        o = self.g_norm_swish_gate(o, heads(self.g_proj(x), self.V)) if self.gate else self.g_norm(o)
        return self.o_proj(o.flatten(2))


class GatedLinearAttention(nn.Module):  # fla/layers/gla.py as GLABlock builds it (ranks 16, normalizer 16)
    def __init__(self, c, fla):
        super().__init__()
        d, H = c["hidden_size"], c["num_heads"]
        self.fla, self.H, self.conv, self.gate = fla, H, c.get("use_short_conv", False), c.get("use_output_gate", True)
        self.K, self.V = int(d * c["expand_k"]) // H, int(d * c["expand_v"]) // H
        self.clamp_min, cs = c.get("clamp_min"), c.get("conv_size", 4)
        HK, HV = H * self.K, H * self.V
        self.q_proj = nn.Linear(d, HK, bias=False)
        self.k_proj = nn.Linear(d, HK, bias=False)
        self.v_proj = nn.Linear(d, HV, bias=False)
        if self.gate:
            self.g_proj = nn.Linear(d, HV, bias=False)
        if self.conv:
            self.q_conv1d, self.k_conv1d, self.v_conv1d = ShortConvolution(HK, cs), ShortConvolution(HK, cs), ShortConvolution(HV, cs)
        self.gk_proj = nn.Sequential(nn.Linear(d, 16, bias=False), nn.Linear(16, HK, bias=True))
        self.o_proj = nn.Linear(HV, d, bias=False)
        if self.gate and c.get("hidden_act", "swish") == "swish" and c.get("fuse_norm", True):
            self.g_norm_swish_gate = RMSNormGated(self.V, c["norm_eps"], "swish")
        else:
            assert not self.gate, "a gate other than fused swish"
            self.g_norm = RMSNorm(self.V, c["norm_eps"])

    def forward(self, x):
        if self.conv:
            q, k, v = self.q_conv1d(self.q_proj(x)), self.k_conv1d(self.k_proj(x)), self.v_conv1d(self.v_proj(x))
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q, k, v = heads(q, self.K), heads(k, self.K), heads(v, self.V)
        gk = F.logsigmoid(heads(self.gk_proj(x), self.K)) / 16
        if self.clamp_min is not None:
            gk = gk.clamp_min(self.clamp_min)
        o, _ = naive(self.fla, "gla").naive_recurrent_gla(q, k, v, gk)
        o = self.g_norm_swish_gate(o, heads(self.g_proj(x), self.V)) if self.gate else self.g_norm(o)
        return self.o_proj(o.flatten(2))


def token_delta(x):  # fla.modules.token_shift: shift(x) - x, shift(x)_t = x_{t-1}, 0 at t = 0
    return F.pad(x, (0, 0, 1, -1)) - x


class LoRA(nn.Module):  # fla/layers/rwkv6.py LoRA: Linear, activation, Linear (+ bias)
    def __init__(self, i, o, rank, act, bias=True):
        super().__init__()
        self.lora = nn.Sequential(nn.Linear(i, rank, bias=False), act, nn.Linear(rank, o, bias=bias))

    def forward(self, x):
        return self.lora(x)


class RWKV7Attention(nn.Module):  # fla/layers/rwkv7.py (fuse_norm: fla's l2_norm and GroupNorm with bias)
    def __init__(self, c, layer, fla):
        super().__init__()
        d, self.K, self.layer, self.fla = c["hidden_size"], c["head_dim"], layer, fla
        self.H = d // self.K
        for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            setattr(self, n, nn.Parameter(torch.zeros(1, 1, d)))
        self.k_k, self.k_a = nn.Parameter(torch.zeros(d)), nn.Parameter(torch.zeros(d))
        self.r_k = nn.Parameter(torch.zeros(self.H, self.K))
        self.r_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.w_lora = LoRA(d, d, c["decay_low_rank_dim"], nn.Tanh())
        if layer != 0:
            self.v_lora = LoRA(d, d, c["v_low_rank_dim"], nn.Identity())
        self.a_lora = LoRA(d, d, c["a_low_rank_dim"], nn.Identity())
        self.g_lora = LoRA(d, d, c["gate_low_rank_dim"], nn.Sigmoid(), bias=False)
        self.g_norm = nn.GroupNorm(self.H, d, eps=self.K * c["norm_eps"])

    def forward(self, x, v_first):
        B, T, d = x.shape
        delta = token_delta(x)
        xr, xw, xk, xv, xa, xg = (x + delta * getattr(self, n) for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"))
        r = self.r_proj(xr)
        w = -0.6065306597126334 * self.w_lora(xw).sigmoid()
        k, v = self.k_proj(xk), self.v_proj(xv)
        if self.layer == 0:
            v_first = v
        else:
            v = torch.lerp(v, v_first, self.v_lora(xv).sigmoid())
        a, g = self.a_lora(xa).sigmoid(), self.g_lora(xg)
        kk = l2norm(heads(k * self.k_k, self.K))
        k = k.addcmul(k * (a - 1), self.k_a)
        r, w, k, a, v = (heads(t, self.K) for t in (r, w, k, a, v))
        tr = lambda t: t.transpose(1, 2)  # noqa: E731  [B,H,T,*]
        # dplr_recurrence scales q by K^-1/2 (RWKV-7 runs at scale 1) and computes in float32
        # (it casts all but alpha, which must then be float32 too)
        o, _ = naive(self.fla, "generalized_delta_rule/dplr").dplr_recurrence(
            tr(r * self.K ** 0.5), tr(k), tr(v), tr(-kk).float(), tr(kk * a), tr(w), None, False)
        o = o.double()
        o = self.g_norm(tr(o).reshape(B * T, d)).view(B, T, d)
        o = (o + ((r * k * self.r_k).sum(-1, keepdim=True) * v).flatten(2)) * g  # gate_output_correction
        return self.o_proj(o), v_first


class LayerNorm(nn.Module):  # fla.modules.LayerNorm (bias optional)
    def __init__(self, d, eps, bias):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


class RWKV7FeedForward(nn.Module):  # fla/models/rwkv7/modeling_rwkv7.py (hidden_act sqrelu)
    def __init__(self, d, inter):
        super().__init__()
        self.x_k = nn.Parameter(torch.zeros(d))
        self.key = nn.Linear(d, inter, bias=False)
        self.value = nn.Linear(inter, d, bias=False)

    def forward(self, x):
        return self.value(F.relu(self.key(x + token_delta(x) * self.x_k)) ** 2)


class RWKV7Block(nn.Module):
    def __init__(self, c, layer, fla):
        super().__init__()
        d, eps, bias = c["hidden_size"], c["norm_eps"], c.get("norm_bias", True)
        if c.get("norm_first", True) and layer == 0:
            self.pre_norm = LayerNorm(d, eps, bias)
        self.attn_norm = LayerNorm(d, eps, bias)
        self.attn = RWKV7Attention(c, layer, fla)
        self.ffn_norm = LayerNorm(d, eps, bias)
        self.ffn = RWKV7FeedForward(d, c["intermediate_size"])

    def forward(self, x, v_first):
        x = self.pre_norm(x) if hasattr(self, "pre_norm") else x
        o, v_first = self.attn(self.attn_norm(x), v_first)
        x = x + o
        return x + self.ffn(self.ffn_norm(x)), v_first


class MultiheadLatentAttention(nn.Module):  # fla/layers/mla.py
    def __init__(self, c, fla):
        super().__init__()
        d, H = c["hidden_size"], c["num_heads"]
        self.H, self.nope, self.rope, self.vd = H, c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
        self.qk, self.theta, dc, dq = self.nope + self.rope, c["rope_theta"], c["kv_lora_rank"], c.get("q_lora_rank")
        if dq:
            self.q_proj = nn.Sequential(nn.Linear(d, dq, bias=False), RMSNorm(dq), nn.Linear(dq, H * self.qk, bias=False))
        else:
            self.q_proj = nn.Linear(d, H * self.qk, bias=False)
        self.k_rope = nn.Linear(d, self.rope, bias=False)
        self.kv_proj = nn.Sequential(nn.Linear(d, dc, bias=False), RMSNorm(dc), nn.Linear(dc, H * (self.nope + self.vd), bias=False))
        self.o_proj = nn.Linear(H * self.vd, d, bias=False)

    def forward(self, x):
        q_pass, q_rot = heads(self.q_proj(x), self.qk).split([self.nope, self.rope], -1)
        k_pass, v = heads(self.kv_proj(x), self.nope + self.vd).split([self.nope, self.vd], -1)
        k_rot = self.k_rope(x)[:, :, None, :]
        q_rot, k_rot = rotary(q_rot, self.theta), rotary(k_rot, self.theta)
        q = torch.cat([q_pass, q_rot], -1)
        k = torch.cat([k_pass, k_rot.expand(-1, -1, self.H, -1)], -1)
        o = causal_softmax_attention(q, k, v, self.qk ** -0.5)
        return self.o_proj(o.flatten(2))


# ---- fla's models ----------------------------------------------------------------------


def mixer_of(c, layer, fla):
    t = c["model_type"]
    attn = c.get("attn")
    if t == "transformer":
        return Attention(c["hidden_size"], c["num_heads"], c.get("num_kv_heads"), c.get("window_size"), c["rope_theta"])
    if attn and layer in attn["layers"]:  # fla.models.hybrid: standard attention at these layers
        return Attention(c["hidden_size"], attn["num_heads"], attn.get("num_kv_heads"), attn.get("window_size"),
                         attn.get("rope_theta", 10000.0))
    if t in ("delta_net", "gated_deltanet", "kda"):
        return DeltaFamily(t, c, fla)
    return {"linear_attn": LinearAttention, "retnet": MultiScaleRetention, "mla": MultiheadLatentAttention,
            "gla": GatedLinearAttention}[t](c, fla)


class Block(nn.Module):  # the blocks of fla/models/<type>/modeling_<type>.py
    def __init__(self, c, layer, fla):
        super().__init__()
        d = c["hidden_size"]
        self.attn_norm = RMSNorm(d, c["norm_eps"])
        self.attn = mixer_of(c, layer, fla)
        self.mlp_norm = RMSNorm(d, c["norm_eps"])
        self.mlp = GatedMLP(d, c["intermediate_size"])

    def forward(self, x):
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class MambaBlock(nn.Module):  # fla/models/mamba{,2}/modeling_mamba{,2}.py: norm, mixer, no MLP
    def __init__(self, c, fla):
        super().__init__()
        self.norm = RMSNorm(c["hidden_size"], c["norm_eps"])
        self.mixer = (Mamba2 if c["model_type"] == "mamba2" else Mamba)(c, fla)

    def forward(self, x):
        return x + self.mixer(self.norm(x))


class Backbone(nn.Module):
    def __init__(self, c, fla):
        super().__init__()
        d, mamba = c["hidden_size"], c["model_type"] in BACKBONE
        self.embeddings = nn.Embedding(c["vocab_size"], d)
        self.rwkv7 = c["model_type"] == "rwkv7"
        block = (lambda i: MambaBlock(c, fla)) if mamba else (lambda i: (RWKV7Block if self.rwkv7 else Block)(c, i, fla))
        self.layers = nn.ModuleList(block(i) for i in range(c["num_hidden_layers"]))
        if mamba:
            self.norm_f = RMSNorm(d, c["norm_eps"])
        elif self.rwkv7:
            self.norm = LayerNorm(d, c["norm_eps"], c.get("norm_bias", True))
        else:
            self.norm = RMSNorm(d, c["norm_eps"])

    def forward(self, ids):
        x = self.embeddings(ids)
        v_first = None
        for layer in self.layers:
            if self.rwkv7:
                x, v_first = layer(x, v_first)
            else:
                x = layer(x)
        return self.norm_f(x) if hasattr(self, "norm_f") else self.norm(x)


class ForCausalLM(nn.Module):
    def __init__(self, c, fla):
        super().__init__()
        setattr(self, "backbone" if c["model_type"] in BACKBONE else "model", Backbone(c, fla))
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def forward(self, ids):
        body = self.backbone if hasattr(self, "backbone") else self.model
        return self.lm_head(body(ids))


# ---- the check ----------------------------------------------------------------------------


def check(d, fla):
    c = json.load(open(os.path.join(d, "config.json")))
    weights = read_safetensors(os.path.join(d, "model.safetensors"))
    ref = read_safetensors(os.path.join(d, "attnlab_check.safetensors"))
    model = ForCausalLM(c, fla)
    own = model.state_dict()
    missing, unused = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if missing or unused:
        return False, f"names: missing {missing[:4]}, unused {unused[:4]}"
    for k, v in own.items():
        if tuple(v.shape) != tuple(weights[k].shape):
            return False, f"{k}: shape {tuple(weights[k].shape)}, fla's model has {tuple(v.shape)}"
    model.load_state_dict({k: v.double() for k, v in weights.items()})
    with torch.no_grad():
        z = model(ref["input_ids"].long())
    a = ref["logits"].double()
    err = ((a - z).norm(dim=-1) / z.norm(dim=-1).clamp_min(1e-30)).max().item()
    return err < TOL and math.isfinite(err), f"{c['model_type']}: {len(weights)} tensors, logits [{', '.join(map(str, a.shape))}], " \
                                             f"worst relative error {err:.2e}"


def main():
    args, fla = sys.argv[1:], "/tmp/fla"
    if "--fla" in args:
        i = args.index("--fla")
        fla = args[i + 1]
        del args[i:i + 2]
    if not args:
        print(__doc__)
        return 2
    bad = 0
    for d in args:
        ok, msg = check(d, fla)
        bad += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {d}: {msg}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
