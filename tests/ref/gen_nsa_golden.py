"""Reference values for the NSA tests (the tests never run this script).

1. tests/golden/nsa_naive.h5, for `probe nsa` (tests/test_probe.c):
   flash-linear-attention's `naive_nsa` (fla/ops/nsa/naive.py) with given
   block_indices and no g_cmp: the selected branch plus the sliding window,
   o = g_slc o_slc + g_swa o_swa, in float32 with autograd gradients. Layout
   of the shared golden files:

       inputs/{q,k,v,g_slc,g_swa,block_indices,do}   fla's [B,T,H,*] layout
       outputs/o
       grads/d{q,k,v,g_slc,g_swa}                    of sum(o do)
       attributes: op = nsa, block_size, window_size

   naive.py is loaded from a checkout of fla without importing the fla
   package (no triton): fla.ops.utils' two helpers and einops.repeat (the
   one pattern used) are stubbed, and `flash_attn_func` (absent here) is
   replaced by a plain causal sliding-window softmax attention with
   window_size = (W - 1, 0), i.e. keys t-W+1 .. t. naive_nsa requires a GQA
   group of at least 16 query heads, hence HQ 16 over H 1 and 32 over 2.
   Every row's indices are distinct (fla's loop would count a repeated block
   twice) and hold the current block (no row sees nothing); some name
   future blocks, which fla masks key by key.

       mkdir -p /tmp/fla && git --git-dir=<mirror of fla-org/flash-linear-attention> \\
           archive HEAD fla | tar -x -C /tmp/fla
       /usr/bin/python3 tests/ref/gen_nsa_golden.py /tmp/fla/fla/ops/nsa/naive.py

   (fla commit bc3b101 was used.)

2. tests/golden/nsa_layer.h5, for tests/test_nsa_golden.c: a whole NSA layer
   written here in plain PyTorch from the paper (arXiv 2502.11089, Eq. 5-12)
   with the choices documented in ops/attention/nsa.h and models/nsa.c (the
   compression MLP phi, overlap-mapped importance, forced blocks), run in
   float64 from float32-representable weights and input, stored as float32.
   Groups layer_<name>: attributes d_model, n_heads, n_kv_heads, head_dim,
   position, cmp_block, cmp_stride, sel_block, n_select, n_local, window,
   cmp_hidden, kv (shared | branches), min_gap (the smallest relative score gap at a selection
   boundary: the float layer ranks the same blocks); datasets params/<name>,
   x, dy, y, dx, grads/<name>, selection [B,H,T,n] (int32).
"""
import importlib.util
import math
import os
import sys
import types

import h5py
import numpy as np
import torch

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden")


# ---- 1. fla's naive_nsa -------------------------------------------------------------


def window_attention(q, k, v, causal=True, window_size=(-1, -1)):
    """flash_attn_func's causal local attention: [B,T,H,D], keys t-left .. t."""
    assert causal
    B, T, HQ, D = q.shape
    G = HQ // k.shape[2]
    k, v = k.repeat_interleave(G, dim=2), v.repeat_interleave(G, dim=2)
    s = torch.einsum("bthd,bshd->bhts", q.float(), k.float()) / math.sqrt(D)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    hidden = (j > i) | (j < i - window_size[0])
    p = torch.softmax(s.masked_fill(hidden, float("-inf")), dim=-1)
    return torch.einsum("bhts,bshd->bthd", p, v.float()).to(q.dtype)


def repeat(x, pattern, g):
    assert pattern == "b t h d -> b t (h g) d", pattern
    return x.repeat_interleave(g, dim=2)


def mean_pooling(x, chunk_size, cu_seqlens=None):
    """Means of consecutive chunks (only computed by naive_nsa, unused without g_cmp)."""
    B, T, H, D = x.shape
    n = -(-T // chunk_size)
    pad = torch.zeros(B, n * chunk_size - T, H, D, dtype=x.dtype)
    return torch.cat([x, pad], 1).view(B, n, chunk_size, H, D).mean(2)


def load_naive(path):
    stubs = {
        "einops": dict(repeat=repeat),
        "flash_attn": dict(flash_attn_func=window_attention, flash_attn_varlen_func=None),
        "fla": {}, "fla.ops": {},
        "fla.ops.utils": dict(prepare_chunk_offsets=None),
        "fla.ops.utils.pooling": dict(mean_pooling=mean_pooling),
    }
    for name, attrs in stubs.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
    spec = importlib.util.spec_from_file_location("fla_nsa_naive", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def random_indices(B, T, H, S, bs, gen):
    """[B,T,H,S]: the current block, then distinct random blocks (a few in the
    future, within the sequence), -1 padded."""
    nb = -(-T // bs)
    idx = torch.full((B, T, H, S), -1, dtype=torch.long)
    for b in range(B):
        for t in range(T):
            for h in range(H):
                cur = t // bs
                pool = [j for j in range(nb) if j != cur and (j < cur or torch.rand(1, generator=gen) < 0.2)]
                perm = torch.randperm(len(pool), generator=gen).tolist()
                take = [cur] + [pool[p] for p in perm[:S - 1]]
                if torch.rand(1, generator=gen) < 0.2 and len(take) > 1:
                    take = take[:-1]  # some rows use fewer slots
                order = torch.randperm(len(take), generator=gen).tolist()
                for e, p in enumerate(order):
                    idx[b, t, h, e] = take[p]
    return idx


def naive_case(naive, f, name, seed, B, T, HQ, H, D, bs, S, window):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, T, n, D, generator=gen) for n in (HQ, H, H))
    g_slc, g_swa = (torch.sigmoid(torch.randn(B, T, HQ, generator=gen)) for _ in range(2))
    idx = random_indices(B, T, H, S, bs, gen)
    do = torch.randn(B, T, HQ, D, generator=gen)
    inputs = dict(q=q, k=k, v=v, g_slc=g_slc, g_swa=g_swa)
    leaves = {n: x.clone().requires_grad_() for n, x in inputs.items()}
    o = naive.naive_nsa(leaves["q"], leaves["k"], leaves["v"], g_slc=leaves["g_slc"], g_swa=leaves["g_swa"],
                        block_indices=idx, block_counts=S, block_size=bs, window_size=window)
    (o * do).sum().backward()
    f32 = lambda x: x.detach().float().numpy()  # noqa: E731
    with h5py.File(os.path.join(GOLDEN, name), "w") as h:
        h.attrs["op"], h.attrs["block_size"], h.attrs["window_size"] = "nsa", bs, window
        for n, x in inputs.items():
            h[f"inputs/{n}"] = f32(x)
            h[f"grads/d{n}"] = f32(leaves[n].grad)
        h["inputs/block_indices"] = idx.numpy()
        h["inputs/do"] = f32(do)
        h["outputs/o"] = f32(o)
    print(f"{name}: |o| {o.norm():.4f}")


# ---- 2. an NSA layer from the paper ----------------------------------------------------


def rope(x, theta=10000.0):
    """x [B, T, H, D]; pairs (i, i + D/2) rotated by t * theta^(-2i/D)."""
    T, D = x.shape[1], x.shape[-1]
    half = D // 2
    inv = theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / D)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


def softmax_masked(s, visible):
    """Softmax over the last dim where visible; rows with nothing visible give 0."""
    p = torch.softmax(s.masked_fill(~visible, float("-inf")), dim=-1)
    return torch.nan_to_num(p, nan=0.0)


BRANCHES = ("cmp", "slc", "swa")


class NSA(torch.nn.Module):
    """kv "branches": each branch its own key and value projections (wk_cmp, wv_cmp, ...; the
    paper's independent keys and values), kv "shared": one wk, wv for all three (fla)."""

    def __init__(self, d, hq, h, hd, position, l, stride, ls, n, n_local, window, hidden, kv):
        super().__init__()
        self.hq, self.h, self.hd, self.position, self.kv = hq, h, hd, position, kv
        self.l, self.stride, self.ls, self.n, self.n_local, self.window = l, stride, ls, n, n_local, window
        kv_names = ["wk", "wv"] if kv == "shared" else [f"w{t}_{b}" for b in BRANCHES for t in "kv"]
        shapes = dict(wq=(hq * hd, d), **{name: (h * hd, d) for name in kv_names}, wg=(3 * hq, d),
                      wo=(d, hq * hd), k_pe=(l, hd), k_w1=(hidden, l * hd), k_w2=(hd, hidden),
                      v_pe=(l, hd), v_w1=(hidden, l * hd), v_w2=(hd, hidden))
        self.NAMES = tuple(shapes)  # the order the weights are drawn in
        for name in self.NAMES:
            setattr(self, name, torch.nn.Parameter(torch.empty(shapes[name], dtype=torch.float64)))

    def compress(self, x, pe, w1, w2):
        """phi: block i = tokens i d .. i d + l - 1 (+ E), flattened, W2 silu(W1 .)."""
        B, T, H, D = x.shape
        C = (T - self.l) // self.stride + 1
        blocks = torch.stack([x[:, i * self.stride:i * self.stride + self.l] for i in range(C)], 1)  # [B,C,l,H,D]
        blocks = (blocks + pe[None, None, :, None, :]).permute(0, 1, 3, 2, 4).reshape(B, C, H, self.l * D)
        return torch.nn.functional.silu(blocks @ w1.T) @ w2.T  # [B,C,H,D]

    def select(self, p, T):
        """p [B,HQ,T,C] -> [B,H,T,n]: overlap-mapped mass summed over the group, forced blocks first."""
        B, C = p.shape[0], p.shape[-1]
        G = self.hq // self.h
        nsb = -(-T // self.ls)
        ov = torch.zeros(C, nsb, dtype=torch.float64)
        for i in range(C):
            for j in range(nsb):
                a, z = max(i * self.stride, j * self.ls), min(i * self.stride + self.l, (j + 1) * self.ls)
                ov[i, j] = max(z - a, 0)
        score = (p.view(B, self.h, G, T, C).sum(2) @ ov).numpy()  # [B,H,T,nsb]
        sel = np.full((B, self.h, T, self.n), -1, dtype=np.int32)
        gap = math.inf
        for b in range(B):
            for h in range(self.h):
                for t in range(T):
                    jt = t // self.ls

                    def prio(j):
                        if j == jt and self.n_local > 0:
                            return 3
                        if j == 0:
                            return 2
                        return 1 if j < jt and jt - j < self.n_local else 0
                    order = sorted(range(jt + 1), key=lambda j: (-prio(j), -score[b, h, t, j], j))
                    sel[b, h, t, :min(self.n, jt + 1)] = order[:self.n]
                    if jt + 1 > self.n and prio(order[self.n]) == 0 and prio(order[self.n - 1]) == 0:
                        s0, s1 = score[b, h, t, order[self.n - 1]], score[b, h, t, order[self.n]]
                        if s0 > 0:
                            gap = min(gap, (s0 - s1) / s0)
        return sel, gap

    def forward(self, x):
        B, T, _ = x.shape
        G, D = self.hq // self.h, self.hd
        q = (x @ self.wq.T).view(B, T, self.hq, D)
        kv = {}
        for b in BRANCHES:
            sfx = "" if self.kv == "shared" else "_" + b
            k = (x @ getattr(self, "wk" + sfx).T).view(B, T, self.h, D)
            kv[b] = (rope(k) if self.position == "rope" else k, (x @ getattr(self, "wv" + sfx).T).view(B, T, self.h, D))
        if self.position == "rope":
            q = rope(q)
        kc = self.compress(kv["cmp"][0], self.k_pe, self.k_w1, self.k_w2)
        vc = self.compress(kv["cmp"][1], self.v_pe, self.v_w1, self.v_w2)
        C = kc.shape[1]
        qh = q.transpose(1, 2)  # [B,HQ,T,D]
        rep = lambda z: z.transpose(1, 2).repeat_interleave(G, dim=1)  # noqa: E731 [B,HQ,*,D]
        t_, i_ = torch.arange(T)[:, None], torch.arange(C)[None, :]
        p = softmax_masked(qh @ rep(kc).transpose(-1, -2) / math.sqrt(D), i_ * self.stride + self.l - 1 <= t_)
        o_cmp = p @ rep(vc)
        sel, gap = self.select(p.detach(), T)
        u_ = torch.arange(T)[None, :]
        blk = torch.from_numpy(sel).long()  # [B,H,T,n]
        vis = ((torch.arange(T) // self.ls)[None, None, None, :, None] == blk[:, :, :, None, :]).any(-1)  # [B,H,T,T]
        vis = vis & (u_ <= t_)
        (ks, vs), (kw, vw) = kv["slc"], kv["swa"]
        s = qh @ rep(ks).transpose(-1, -2) / math.sqrt(D)
        o_slc = softmax_masked(s, vis.repeat_interleave(G, dim=1)) @ rep(vs)
        s = qh @ rep(kw).transpose(-1, -2) / math.sqrt(D)
        o_swa = softmax_masked(s, (u_ <= t_) & (u_ > t_ - self.window)) @ rep(vw)
        g = torch.sigmoid(x @ self.wg.T).view(B, T, self.hq, 3).transpose(1, 2)  # [B,HQ,T,3]
        o = g[..., 0:1] * o_cmp + g[..., 1:2] * o_slc + g[..., 2:3] * o_swa
        return o.transpose(1, 2).reshape(B, T, self.hq * D) @ self.wo.T, sel, gap


def fill(p, std, gen):
    with torch.no_grad():
        p.copy_((torch.randn(p.shape, generator=gen, dtype=torch.float64) * std).float().double())


def layer_case(f, name, seed, B, T, d, hq, h, hd, position, l, stride, ls, n, n_local, window, hidden, kv):
    gen = torch.Generator().manual_seed(seed)
    m = NSA(d, hq, h, hd, position, l, stride, ls, n, n_local, window, hidden, kv)
    for w in m.NAMES:
        p = getattr(m, w)
        fill(p, 1 / math.sqrt(p.shape[1]) if "_w" in w else 0.3, gen)
    x = torch.randn(B, T, d, generator=gen, dtype=torch.float64).float().double().requires_grad_()
    y, sel, gap = m(x)
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64).float().double()
    y.backward(dy)
    grp = f.create_group(f"layer_{name}")
    a = grp.attrs
    a["d_model"], a["n_heads"], a["n_kv_heads"], a["head_dim"], a["position"] = d, hq, h, hd, np.bytes_(position)
    a["cmp_block"], a["cmp_stride"], a["sel_block"], a["n_select"] = l, stride, ls, n
    a["n_local"], a["window"], a["cmp_hidden"], a["min_gap"] = n_local, window, hidden, gap
    a["kv"] = np.bytes_(kv)
    f32 = lambda z: z.detach().float().numpy()  # noqa: E731
    for w in m.NAMES:
        grp[f"params/{w}"] = f32(getattr(m, w))
        grp[f"grads/{w}"] = f32(getattr(m, w).grad)
    grp["x"], grp["dy"], grp["y"], grp["dx"] = f32(x), f32(dy), f32(y), f32(x.grad)
    grp["selection"] = sel
    print(f"layer_{name}: |y| {y.norm():.3f} |dx| {x.grad.norm():.3f}, min relative gap {gap:.3g}")
    assert gap > 1e-4, "a selection boundary is too close to a tie for a float comparison: change the seed"


def main():
    naive = load_naive(sys.argv[1] if len(sys.argv) > 1 else "/tmp/fla/fla/ops/nsa/naive.py")
    torch.manual_seed(0)
    naive_case(naive, None, "nsa_naive.h5", 1, 4, 45, 16, 1, 8, 8, 3, 8)
    naive_case(naive, None, "nsa_naive_gqa.h5", 2, 3, 29, 32, 2, 4, 4, 4, 6)
    with h5py.File(os.path.join(GOLDEN, "nsa_layer.h5"), "w") as f:
        # GQA, RoPE, ragged T, ranked blocks beyond the forced ones
        layer_case(f, "rope_gqa", 1, 16, 61, 32, 4, 2, 8, "rope", 8, 4, 8, 4, 2, 16, 16, "shared")
        # MQA, NoPE, selection blocks unlike the compression blocks
        layer_case(f, "nope_mqa", 2, 16, 50, 32, 4, 1, 8, "nope", 4, 2, 8, 3, 1, 8, 12, "shared")
        # the paper's independent keys and values per branch, GQA, RoPE
        layer_case(f, "branches_rope_gqa", 3, 16, 57, 32, 4, 2, 8, "rope", 8, 4, 8, 4, 2, 16, 16, "branches")


if __name__ == "__main__":
    main()
