"""Reference values for tests/test_mla_golden.c: whole MLA and DSA layers
written here in plain PyTorch from the papers, independent of attnlab's C:

  MLA (DeepSeek-V2 §2.1): c_Q = RMSNorm(W_DQ x) (or x without query
  compression), q = W_UQ c_Q per head [rope part | nope part]; c_KV =
  RMSNorm(W_DKV x); k_R = RoPE(W_KR x), one rotary key shared by the heads;
  k = [k_R | W_UK c_KV], v = W_UV c_KV; causal softmax with scale
  (hd + dr)^-1/2; y = W_O o. RoPE is rotate-half on the dr rotary dims
  (theta 10^4); RMSNorm eps 1e-5.

  DSA (DeepSeek-V3.2-Exp §2): the lightning indexer on detached inputs,
  q_I = RoPE(W_qI c_Q) [HI, DI], k_I = RoPE(LayerNorm(W_kI x)) (eps 1e-6),
  w = W_w x (HI DI)^-1/2, I[t,s] = sum_j w[t,j] ReLU(q_I[t,j] . k_I[s]);
  sparse stage: each token attends to its top-k causal keys by I (all of
  them while t + 1 <= k); the indexer's loss KL(p_t || softmax(I[t, L_t]))
  averaged over the B T rows, p_t the main attention's probabilities summed
  over heads and normalised (a constant), L_t all causal keys (dense stage)
  or the selection (sparse stage, both renormalised over it).

Computed in float64 from float32-representable weights and inputs, stored
as float32. B = 16, T = 41 (ragged), d_model 64, 4 heads of 16.

Run with /usr/bin/python3 (torch 1.13, h5py) from the source root:
    /usr/bin/python3 tests/ref/gen_mla_layers.py
It writes tests/golden/mla_layers.h5. The tests never run this script.

Per case (group /<case>): attributes mixer (mla | dsa), d_model, n_heads,
head_dim, kv_rank, q_rank, rope_dim, (dsa) index_heads, index_dim, topk,
sparse (0/1), indexer_loss (0/1); datasets params/<attnlab name>, x, dy,
y, dx, grads/<name> (main parameters: of sum(y * dy); indexer parameters: of
the KL), and (dsa with indexer_loss) the attribute kl.
"""
import os

import h5py
import numpy as np
import torch

torch.set_default_dtype(torch.float64)
B, T, D, H, HD = 16, 41, 64, 4, 16


def rope(x, dr, theta=10000.0):
    """Rotate-half RoPE on the first dr dims of x [B, T, heads, dim]."""
    if dr == 0:
        return x
    half = dr // 2
    inv = theta ** (-2.0 * torch.arange(half) / dr)
    ang = torch.arange(x.shape[1])[:, None] * inv[None, :]
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    a, b, rest = x[..., :half], x[..., half:dr], x[..., dr:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin, rest], dim=-1)


def rmsnorm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def layernorm(x, w, b, eps=1e-6):
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    return (x - mu) * torch.rsqrt(var + eps) * w + b


class MLA(torch.nn.Module):
    def __init__(self, dc, dq, dr, hi=0, di=0, d=D, h=H, hd=HD):
        super().__init__()
        self.dc, self.dq, self.dr, self.h, self.hd = dc, dq, dr, h, hd
        D, H, HD = d, h, hd  # noqa: N806 (the layer's sizes)
        P = lambda *s: torch.nn.Parameter(torch.empty(*s))  # noqa: E731
        if dq:
            self.w_dq, self.q_norm, self.w_uq = P(dq, D), P(dq), P(H * (dr + HD), dq)
        else:
            self.w_q = P(H * (dr + HD), D)
        self.w_dkv, self.kv_norm = P(dc, D), P(dc)
        if dr:
            self.w_kr = P(dr, D)
        self.w_uk, self.w_uv, self.w_o = P(H * HD, dc), P(H * HD, dc), P(D, H * HD)
        self.hi, self.di = hi, di
        if hi:
            qin = dq if dq else D
            self.w_qi, self.w_ki = P(hi * di, qin), P(di, D)
            self.k_norm_w, self.k_norm_b, self.w_wi = P(di), P(di), P(hi, D)

    def indexer_names(self):
        return {"w_qi", "w_ki", "k_norm_w", "k_norm_b", "w_wi"}

    def project(self, x):
        Bn, Tn, _ = x.shape
        H, HD = self.h, self.hd  # noqa: N806
        cq = rmsnorm(x @ self.w_dq.T, self.q_norm) if self.dq else None
        q = ((cq if cq is not None else x) @ (self.w_uq if self.dq else self.w_q).T).view(Bn, Tn, H, self.dr + HD)
        ckv = rmsnorm(x @ self.w_dkv.T, self.kv_norm)
        k = (ckv @ self.w_uk.T).view(Bn, Tn, H, HD)
        v = (ckv @ self.w_uv.T).view(Bn, Tn, H, HD)
        if self.dr:
            q = rope(q, self.dr)
            kr = rope((x @ self.w_kr.T).view(Bn, Tn, 1, self.dr), self.dr).expand(Bn, Tn, H, self.dr)
            k = torch.cat([kr, k], dim=-1)
        return q, k, v, cq

    def indexer(self, x, cq):
        Bn, Tn, _ = x.shape
        xd = x.detach()
        qin = cq.detach() if cq is not None else xd
        qi = rope((qin @ self.w_qi.T).view(Bn, Tn, self.hi, self.di), self.dr)
        ki = rope(layernorm(xd @ self.w_ki.T, self.k_norm_w, self.k_norm_b).view(Bn, Tn, 1, self.di), self.dr)[:, :, 0]
        w = (xd @ self.w_wi.T) / (self.hi * self.di) ** 0.5
        a = torch.einsum("btjd,bsd->btjs", qi, ki).relu()
        return torch.einsum("btj,btjs->bts", w, a)  # I [B, T, T]

    def forward(self, x, topk=0, sparse=False, want_kl=False):
        H, HD = self.h, self.hd  # noqa: N806
        q, k, v, cq = self.project(x)
        Tn = x.shape[1]
        causal = torch.ones(Tn, Tn, dtype=torch.bool).tril()[None]
        allowed = causal.expand(x.shape[0], Tn, Tn)
        I = None
        if sparse or want_kl:
            I = self.indexer(x, cq)
            Im = I.masked_fill(~allowed, float("-inf"))
            kk = min(topk, Tn)
            idx = Im.topk(kk, dim=-1).indices
            sel = torch.zeros_like(allowed).scatter_(-1, idx, True) & allowed
            if sparse:
                allowed = sel
        scale = (self.dr + HD) ** -0.5
        s = torch.einsum("bthd,bshd->bhts", q, k) * scale
        s = s.masked_fill(~allowed[:, None], float("-inf"))
        p = s.softmax(-1)
        o = torch.einsum("bhts,bshd->bthd", p, v).reshape(x.shape[0], Tn, H * HD)
        y = o @ self.w_o.T
        kl = None
        if want_kl:
            teacher = p.detach().sum(1)
            teacher = teacher / teacher.sum(-1, keepdim=True)
            logpi = I.masked_fill(~allowed, float("-inf")).log_softmax(-1)
            t = teacher.clamp_min(1e-300)
            kl_rows = torch.where(allowed, teacher * (t.log() - logpi), torch.zeros_like(teacher)).sum(-1)
            kl = kl_rows.mean()
        return y, kl


CASES = [
    # name, kv_rank, q_rank, rope_dim, (index_heads, index_dim, topk, sparse, indexer_loss)
    ("mla_rope_qcomp", 32, 24, 8, None),
    ("mla_nope", 32, 0, 0, None),
    ("dsa_dense_kl", 32, 24, 8, (8, 12, 8, 0, 1)),
    ("dsa_sparse_kl", 32, 24, 8, (8, 12, 8, 1, 1)),
    ("dsa_sparse_nope", 24, 0, 0, (8, 8, 6, 1, 0)),
]


def selection_margin(m, x, topk):
    """The smallest gap between the k-th and (k+1)-th index score over the
    rows that select (ReLU makes exact ties possible: a case is kept only
    when its selection is unambiguous in float)."""
    with torch.no_grad():
        _, _, _, cq = m.project(x)
        I = m.indexer(x, cq)
        gap = float("inf")
        for t in range(topk, x.shape[1]):
            top = I[:, t, : t + 1].sort(-1, descending=True).values
            gap = min(gap, float((top[:, topk - 1] - top[:, topk]).min() / (top[:, 0].abs().max() + 1e-30)))
        return gap


def f32(t):
    return t.detach().float().numpy()


def draw(gen, dc, dq, dr, hi, di):
    m = MLA(dc, dq, dr, hi, di)
    with torch.no_grad():
        for key, p in m.named_parameters():
            z = torch.randn(p.shape, generator=gen)
            if "norm_b" in key:
                p.copy_(0.2 * z)
            elif "norm" in key:
                p.copy_(1 + 0.2 * z)
            else:
                p.copy_(z * (1.0 / p.shape[-1]) ** 0.5 * 1.5)
            p.copy_(p.float().double())
    return m, torch.randn(B, T, D, generator=gen).float().double()


def main():
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    out = os.path.join(root, "tests", "golden", "mla_layers.h5")
    with h5py.File(out, "w") as f:
        for ci, (name, dc, dq, dr, dsa) in enumerate(CASES):
            hi, di, topk, sparse, want = dsa if dsa else (0, 0, 0, 0, 0)
            for attempt in range(100):
                gen = torch.Generator().manual_seed(200 + 100 * ci + attempt)
                m, x = draw(gen, dc, dq, dr, hi, di)
                if not dsa or selection_margin(m, x, topk) > 1e-4:
                    break
            else:
                raise SystemExit(f"{name}: no draw with an unambiguous top-k selection")
            x.requires_grad_()
            y, kl = m(x, topk, bool(sparse), bool(want))
            dy = torch.randn(y.shape, generator=gen).float().double()
            loss = (y * dy).sum() + (kl if kl is not None else 0)
            loss.backward()
            g = f.create_group(name)
            a = g.attrs
            a["mixer"] = np.bytes_("dsa" if dsa else "mla")
            a["d_model"], a["n_heads"], a["head_dim"] = D, H, HD
            a["kv_rank"], a["q_rank"], a["rope_dim"] = dc, dq, dr
            a["index_heads"], a["index_dim"], a["topk"] = hi, di, topk
            a["sparse"], a["indexer_loss"] = sparse, want
            if kl is not None:
                a["kl"] = kl.item()
            for key, p in m.named_parameters():
                g[f"params/{key}"] = f32(p)
                g[f"grads/{key}"] = f32(p.grad if p.grad is not None else torch.zeros_like(p))
            g["x"], g["dy"], g["y"], g["dx"] = f32(x), f32(dy), f32(y), f32(x.grad)
            print(f"{name}: |y| {y.norm():.3f}" + (f", kl {kl.item():.6f}" if kl is not None else ""))


if __name__ == "__main__":
    main()
