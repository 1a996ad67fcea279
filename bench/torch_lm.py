#!/usr/bin/env python3
"""PyTorch CPU reference for attnlab's training-throughput benchmark.

Builds the same decoder LM as attnlab's models/ (token embedding, pre-norm
blocks [RMSNorm -> mixer -> residual -> RMSNorm -> SwiGLU -> residual],
final RMSNorm, LM head) with a softmax-attention mixer (RoPE, causal) or one
of the linear mixers of models/delta_layers.c and models/mamba2.c (kda, gdn,
deltanet, mamba2: the same projections, short convs, gates and norms, with a
chunkwise delta rule written in plain PyTorch and differentiated by
autograd), and times full training steps (forward, backward, AdamW) on
random tokens. Prints one line:

    torch mixer=kda tokens_per_second=12345.6 step_ms=...

The linear mixers' parameter names follow attnlab's (q_proj, f_proj.down,
A_log, ...).

Needs python3-torch (Debian: apt-get install python3-torch). Never run by the
tests; bench/compare.sh runs it next to attnlab's bench_train.
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, theta=10000.0):
    # x [B, T, H, D], rotate-half pairing (i, i + D/2)
    B, T, H, D = x.shape
    half = D // 2
    freq = theta ** (-torch.arange(half, dtype=torch.float32) * 2 / D)
    ang = torch.arange(T, dtype=torch.float32)[:, None] * freq[None, :]
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class FullAttention(nn.Module):
    def __init__(self, d, hq, h):
        super().__init__()
        self.hq, self.h, self.hd = hq, h, d // hq
        self.wq = nn.Linear(d, hq * self.hd, bias=False)
        self.wk = nn.Linear(d, h * self.hd, bias=False)
        self.wv = nn.Linear(d, h * self.hd, bias=False)
        self.wo = nn.Linear(hq * self.hd, d, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        q = rope(self.wq(x).view(B, T, self.hq, self.hd))
        k = rope(self.wk(x).view(B, T, self.h, self.hd))
        v = self.wv(x).view(B, T, self.h, self.hd)
        g = self.hq // self.h
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        k = k.repeat_interleave(g, dim=1)
        v = v.repeat_interleave(g, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        p = s.masked_fill(mask, float("-inf")).softmax(-1)
        o = (p @ v).transpose(1, 2).reshape(B, T, self.hq * self.hd)
        return self.wo(o)


# ---- linear mixers (as models/delta_layers.c and models/mamba2.c) ----------


def chunk_delta(q, k, v, g, beta, chunk=64, scale=None):
    """Chunkwise gated delta rule, flash-linear-attention conventions.

    q, k [B,T,H,K], v [B,T,H,V], g [B,T,H,K] log-decays (<= 0; a per-head gate
    is expanded over K), beta [B,T,H] or None (None: no delta correction,
    i.e. simple GLA / SSD). Per head, with S in R^{K x V}:
        S_t = (I - beta_t k_t k_t^T) diag(exp(g_t)) S_{t-1} + beta_t k_t v_t^T
        o_t = S_t^T (scale q_t)
    In a chunk with in-chunk cumulative decays b (inclusive) and start state S0:
        A[t,i]  = beta_t sum_d k_td k_id exp(b_td - b_id)        (i < t)
        U       = (I + A)^-1 diag(beta) (V - (K * exp(b)) S0)
        O       = (Q * exp(b)) S0 + tril_incl(sum_d q_td k_id exp(b_td - b_id)) U
        S_end   = exp(b_last) * S0 + (K * exp(b_last - b))^T U
    Pairwise decay exponents are masked to -inf above the diagonal BEFORE exp,
    so no exponent is positive (no overflow, no NaN gradient).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    q, k, v, g = (x.transpose(1, 2) for x in (q * scale, k, v, g))  # [B,H,T,*]
    if beta is not None:
        beta = beta.transpose(1, 2)  # [B,H,T]
    S = q.new_zeros(B, H, K, V)
    outs = []
    for s0 in range(0, T, chunk):
        s1 = min(T, s0 + chunk)
        C = s1 - s0
        qc, kc, vc = q[:, :, s0:s1], k[:, :, s0:s1], v[:, :, s0:s1]
        b = g[:, :, s0:s1].cumsum(-2)                      # [B,H,C,K]
        diff = b[:, :, :, None, :] - b[:, :, None, :, :]  # [B,H,C(t),C(i),K]
        incl = torch.ones(C, C, dtype=torch.bool).tril()
        strict = torch.ones(C, C, dtype=torch.bool).tril(-1)
        e_incl = diff.masked_fill(~incl[:, :, None], float("-inf")).exp()
        eb = b.exp()
        Aqk = torch.einsum("bhtd,bhid,bhtid->bhti", qc, kc, e_incl)
        if beta is not None:
            bc = beta[:, :, s0:s1]
            e_strict = e_incl.masked_fill(~strict[:, :, None], 0.0)
            Akk = torch.einsum("bhtd,bhid,bhtid->bhti", kc, kc, e_strict) * bc[..., None]
            rhs = bc[..., None] * (vc - (kc * eb) @ S)
            eye = torch.eye(C, dtype=q.dtype)
            U = torch.linalg.solve_triangular(eye + Akk, rhs, upper=False, unitriangular=True)
        else:
            U = vc
        outs.append((qc * eb) @ S + Aqk @ U)
        blast = b[:, :, -1:, :]                            # [B,H,1,K]
        S = blast.transpose(-1, -2).exp() * S + (kc * (blast - b).exp()).transpose(-1, -2) @ U
    return torch.cat(outs, dim=2).transpose(1, 2)          # [B,T,H,V]


def inv_softplus_dt(n):
    dt = torch.exp(torch.rand(n) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
    return dt + torch.log(-torch.expm1(-dt))


class ShortConv(nn.Module):
    """Causal depthwise conv (no bias) then SiLU; attnlab's weight [C, K]."""

    def __init__(self, channels, size):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels, size) * 0.02)

    def forward(self, x):  # [B,T,C]
        T, size = x.shape[1], self.weight.shape[1]
        y = F.conv1d(x.transpose(1, 2), self.weight[:, None, :], padding=size - 1,
                     groups=x.shape[-1])
        return F.silu(y[..., :T].transpose(1, 2))


class LowRank(nn.Module):
    def __init__(self, d, rank, out, bias=False):
        super().__init__()
        self.down = nn.Linear(d, rank, bias=False)
        self.up = nn.Linear(rank, out, bias=bias)

    def forward(self, x):
        return self.up(self.down(x))


class DeltaMixer(nn.Module):
    """deltanet / gdn / kda (models/delta_layers.c)."""

    def __init__(self, kind, d, heads, head_dim, expand_v=1, conv=4, chunk=64, gate=None,
                 eps=1e-5, lower_bound=None, neg_eig=False):
        super().__init__()
        self.kind, self.H, self.K, self.V = kind, heads, head_dim, expand_v * head_dim
        self.chunk, self.eps, self.conv = chunk, eps, conv
        self.lower_bound, self.neg_eig = lower_bound, neg_eig  # lower_bound: the bounded gate
        self.gate = gate or {"kda": "sigmoid", "gdn": "swish", "deltanet": "none"}[kind]
        HK, HV = heads * head_dim, heads * self.V
        self.q_proj = nn.Linear(d, HK, bias=False)
        self.k_proj = nn.Linear(d, HK, bias=False)
        self.v_proj = nn.Linear(d, HV, bias=False)
        self.b_proj = nn.Linear(d, heads, bias=False)
        if conv:
            self.q_conv, self.k_conv, self.v_conv = ShortConv(HK, conv), ShortConv(HK, conv), ShortConv(HV, conv)
        else:
            self.q_conv = self.k_conv = self.v_conv = nn.SiLU()
        if kind == "kda":
            self.f_proj = LowRank(d, self.V, HK)
            self.dt_bias = nn.Parameter(inv_softplus_dt(HK))
        elif kind == "gdn":
            self.a_proj = nn.Linear(d, heads, bias=False)
            self.dt_bias = nn.Parameter(inv_softplus_dt(heads))
        if kind != "deltanet":
            self.A_log = nn.Parameter(torch.empty(heads).uniform_(1, 16).log())
        if self.gate == "sigmoid":
            self.g_proj = LowRank(d, self.V, HV, bias=True)
        elif self.gate == "swish":
            self.g_proj = nn.Linear(d, HV, bias=False)
        self.o_norm = nn.Parameter(torch.ones(self.V))
        self.o_proj = nn.Linear(HV, d, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        H, K, V = self.H, self.K, self.V
        q = self.q_conv(self.q_proj(x)).view(B, T, H, K)
        k = self.k_conv(self.k_proj(x)).view(B, T, H, K)
        q = q * torch.rsqrt(q.pow(2).sum(-1, keepdim=True) + 1e-6)
        k = k * torch.rsqrt(k.pow(2).sum(-1, keepdim=True) + 1e-6)
        v = self.v_conv(self.v_proj(x)).view(B, T, H, V)
        beta = self.b_proj(x).sigmoid() * (2.0 if self.neg_eig else 1.0)
        A = self.A_log.exp() if self.kind != "deltanet" else None

        def gate(f, A):
            if self.lower_bound is None:
                return -A * F.softplus(f)
            return self.lower_bound * torch.sigmoid(A * f)

        if self.kind == "kda":
            g = gate((self.f_proj(x) + self.dt_bias).view(B, T, H, K), A[:, None])
        elif self.kind == "gdn":
            g = gate(self.a_proj(x) + self.dt_bias, A)[..., None].expand(B, T, H, K)
        else:
            g = q.new_zeros(B, T, H, K)
        o = chunk_delta(q, k, v, g, beta, self.chunk)
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + self.eps) * self.o_norm
        if self.gate == "sigmoid":
            o = o * self.g_proj(x).view(B, T, H, V).sigmoid()
        elif self.gate == "swish":
            o = o * F.silu(self.g_proj(x).view(B, T, H, V))
        return self.o_proj(o.reshape(B, T, H * V))


class Mamba2Mixer(nn.Module):
    """mamba2 (models/mamba2.c): SSD as the chunkwise rule without the delta."""

    def __init__(self, d, head_dim, d_state=16, expand=2, conv=4, chunk=64, eps=1e-5, gate="swish"):
        super().__init__()
        self.I, self.P, self.N = expand * d, head_dim, d_state
        self.H, self.chunk, self.eps, self.gate = self.I // head_dim, chunk, eps, gate
        if gate != "none":
            self.z_proj = nn.Linear(d, self.I, bias=False)
        self.x_proj = nn.Linear(d, self.I, bias=False)
        self.B_proj = nn.Linear(d, d_state, bias=False)
        self.C_proj = nn.Linear(d, d_state, bias=False)
        self.dt_proj = nn.Linear(d, self.H, bias=False)
        if conv:
            self.x_conv, self.B_conv, self.C_conv = ShortConv(self.I, conv), ShortConv(d_state, conv), ShortConv(d_state, conv)
        else:
            self.x_conv = self.B_conv = self.C_conv = nn.SiLU()
        self.A_log = nn.Parameter(torch.empty(self.H).uniform_(1, 16).log())
        self.dt_bias = nn.Parameter(inv_softplus_dt(self.H))
        self.D = nn.Parameter(torch.ones(self.H))
        self.norm = nn.Parameter(torch.ones(self.I))
        self.out_proj = nn.Linear(self.I, d, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        H, P, N = self.H, self.P, self.N
        xs = self.x_conv(self.x_proj(x)).view(B, T, H, P)
        Bm = self.B_conv(self.B_proj(x))[:, :, None, :].expand(B, T, H, N)
        Cm = self.C_conv(self.C_proj(x))[:, :, None, :].expand(B, T, H, N)
        dt = F.softplus(self.dt_proj(x) + self.dt_bias)                   # [B,T,H]
        g = (-self.A_log.exp() * dt)[..., None].expand(B, T, H, N)
        y = chunk_delta(Cm, Bm, xs * dt[..., None], g, None, self.chunk, scale=1.0)
        y = (y + xs * self.D[:, None]).reshape(B, T, self.I)
        if self.gate == "swish":
            y = y * F.silu(self.z_proj(x))
        elif self.gate == "sigmoid":
            y = y * torch.sigmoid(self.z_proj(x))
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps) * self.norm
        return self.out_proj(y)


class Block(nn.Module):
    def __init__(self, d, mixer, hidden):
        super().__init__()
        self.norm1, self.mixer = RMSNorm(d), mixer
        self.hidden = hidden
        if hidden:
            self.norm2 = RMSNorm(d)
            self.w_gate = nn.Linear(d, hidden, bias=False)
            self.w_up = nn.Linear(d, hidden, bias=False)
            self.w_down = nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        x = x + self.mixer(self.norm1(x))
        if self.hidden:
            h = self.norm2(x)
            x = x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))
        return x


def auto_chunk(k):
    """The delta family's chunk for head dim k when --chunk is 0, as attnlab's
    chunk_size 0: the pair terms cost O(C^2 k) per chunk, the state O(C k v);
    here too chunks of 16 at k 32 run about 3x faster than chunks of 64."""
    return 16 if k <= 32 else 32 if k <= 64 else 64


class LM(nn.Module):
    def __init__(self, args):
        super().__init__()
        d = args.d_model
        self.emb = nn.Embedding(args.vocab, d)
        hd = args.head_dim or d // args.heads
        ck = args.chunk or auto_chunk(hd)  # attnlab's default chunks (models/linear_mixers.h)
        mixers = {
            "full": lambda: FullAttention(d, args.heads, args.kv_heads),
            "kda": lambda: DeltaMixer("kda", d, args.heads, hd, 1, chunk=ck),
            "gdn": lambda: DeltaMixer("gdn", d, args.heads, hd, 2, chunk=ck),
            "deltanet": lambda: DeltaMixer("deltanet", d, args.heads, hd, 1, chunk=ck),
            "mamba2": lambda: Mamba2Mixer(d, hd, args.d_state, chunk=args.chunk or 64),
        }
        self.blocks = nn.ModuleList(
            Block(d, mixers[args.mixer](), args.mlp_hidden) for _ in range(args.layers))
        self.norm = RMSNorm(d)
        self.head = nn.Linear(d, args.vocab, bias=False)

    def forward(self, tokens, labels):
        x = self.emb(tokens)
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mixer", default="full", choices=["full", "kda", "gdn", "deltanet", "mamba2"])
    ap.add_argument("--head-dim", type=int, default=0, help="linear mixers (0: d_model / heads)")
    ap.add_argument("--chunk", type=int, default=0,
                    help="linear mixers' chunk size (0: attnlab's default, by head dim; mamba2 64)")
    ap.add_argument("--d-state", type=int, default=16, help="mamba2")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--mlp-hidden", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = LM(args)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq_len))
    labels = torch.randint(0, args.vocab, (args.batch, args.seq_len))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(tokens, labels)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    dt = (time.perf_counter() - t0) / args.steps
    print(f"torch mixer={args.mixer} tokens_per_second={args.batch * args.seq_len / dt:.1f} "
          f"step_ms={dt * 1e3:.2f} params={sum(p.numel() for p in model.parameters())}")


if __name__ == "__main__":
    main()
