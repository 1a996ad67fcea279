"""Reference values for tests/test_sparse_golden.c: the fixed-pattern sparse
attention layers written here in plain PyTorch from the papers, as dense
boolean masks over (query head, i, j), independent of attnlab's C layouts:

  Sparse Transformer (Child et al. 2019): strided A1 = {max(0, i-l) .. i},
    A2 = {j : (i-j) mod l = 0}; fixed A1 = {j : j // l = i // l},
    A2 = {j : l-c-s <= j mod l < l-s}; parts per head (combine heads: even
    heads A1, odd A2), per layer parity (layers) or their union (merged);
    the k-th head using A2 reads the sub-block s = (k mod l//c) c.
  Longformer (Beltagy et al. 2020), causal: per-layer window W_l linear in
    depth, dilation d on the first dilated_heads heads (i-j = m d, m < W_l),
    the first n_global positions global (attend to every earlier key, seen by
    every later query) with their own q/k/v projections: positions t <
    n_global take q, k, v from wq_g, wk_g, wv_g.
  BigBird (Zaheer et al. 2020), causal, without random blocks (their draw
    is attnlab's counter RNG, tested separately): query block r sees key
    blocks r-w .. r and the first g blocks; the first g blocks see every
    earlier block.

All intersected with causality (j <= i). q/k/v projections, RoFormer's
rotate-half RoPE (theta 1e4), GQA (query head h reads kv head h // (HQ/H)),
softmax scale hd^-1/2, y = o wo^T. Computed in float64 from
float32-representable weights and inputs, stored as float32, at B 16, T 75
(ragged against 64-row tiles), d 32, 4 query heads of 8, 2 kv heads.

Run with /usr/bin/python3 (torch 1.13, h5py) from the source root:
    /usr/bin/python3 tests/ref/gen_sparse_layers.py
It writes tests/golden/sparse_layers.h5. The tests never run this script.

Groups <case>: attributes mixer, d_model, n_heads, n_kv_heads, head_dim,
layer_index, n_layers and one per mixer option; datasets params/<name>, x
[B,T,d], dy, y, dx, grads/<name>.
"""
import math
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from gen_full_attention import f32, fill, rope  # noqa: E402  (RoPE, float32 rounding)

torch.set_default_dtype(torch.float64)


def causal(T):
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    return i, j, j <= i


def st_mask(T, HQ, o, layer_index):
    """[HQ, T, T] visible pairs of the Sparse Transformer."""
    i, j, cz = causal(T)
    l, comb = o["stride"], o["combine"]
    out = []
    for h in range(HQ):
        if comb == "merged":
            a1, a2, k = True, True, h
        elif comb == "heads":
            a1, a2, k = h % 2 == 0, h % 2 == 1, h // 2
        else:
            a1, a2, k = layer_index % 2 == 0, layer_index % 2 == 1, h
        if o["pattern"] == "strided":
            p1 = j >= i - l
            p2 = (i - j) % l == 0
        else:
            c = o["summary"]
            s = (k % (l // c)) * c if o.get("distinct", 1) else 0
            p1 = (j // l) == (i // l)
            p2 = ((j % l) >= l - c - s) & ((j % l) < l - s)
        m = torch.zeros(T, T, dtype=torch.bool)
        if a1:
            m |= p1
        if a2:
            m |= p2
        out.append(m & cz)
    return torch.stack(out)


def lf_window(o, li, n_layers):
    if o.get("window_top", 0) <= 0 or n_layers < 2:
        return o["window"]
    return o["window"] + round((o["window_top"] - o["window"]) * li / (n_layers - 1))


def lf_mask(T, HQ, o, layer_index, n_layers):
    i, j, cz = causal(T)
    W, ng = lf_window(o, layer_index, n_layers), o["n_global"]
    out = []
    for h in range(HQ):
        d = o["dilation"] if h < o["dilated_heads"] else 1
        win = ((i - j) % d == 0) & ((i - j) // d < W)
        glob = (i < ng) | (j < ng)
        out.append((win | glob) & cz)
    return torch.stack(out)


def bb_mask(T, HQ, o):
    i, j, cz = causal(T)
    b, w, g = o["block"], o["window_blocks"], o["global_blocks"]
    r, s = i // b, j // b
    m = ((s >= r - w) | (s < g) | (r < g)) & cz
    return m[None].expand(HQ, T, T)


class Sparse(torch.nn.Module):
    def __init__(self, mixer, d, hq, h, hd, opts, layer_index, n_layers):
        super().__init__()
        self.mixer, self.hq, self.h, self.hd, self.o = mixer, hq, h, hd, opts
        self.li, self.nl = layer_index, n_layers
        names = ["wq", "wk", "wv", "wo"]
        if mixer == "longformer" and opts["n_global"] > 0:
            names += ["wq_g", "wk_g", "wv_g"]
        self.names = names
        for n in names:
            rows = hq * hd if n.startswith("wq") else (d if n == "wo" else h * hd)
            cols = hq * hd if n == "wo" else d
            setattr(self, n, torch.nn.Parameter(torch.empty(rows, cols)))

    def mask(self, T):
        if self.mixer == "sparse_transformer":
            return st_mask(T, self.hq, self.o, self.li)
        if self.mixer == "longformer":
            return lf_mask(T, self.hq, self.o, self.li, self.nl)
        return bb_mask(T, self.hq, self.o)

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = x @ self.wq.T, x @ self.wk.T, x @ self.wv.T
        if self.mixer == "longformer" and self.o["n_global"] > 0:
            glob = (torch.arange(T) < self.o["n_global"])[None, :, None]
            q = torch.where(glob, x @ self.wq_g.T, q)
            k = torch.where(glob, x @ self.wk_g.T, k)
            v = torch.where(glob, x @ self.wv_g.T, v)
        q = rope(q.view(B, T, self.hq, self.hd))
        k = rope(k.view(B, T, self.h, self.hd))
        v = v.view(B, T, self.h, self.hd)
        g = self.hq // self.h
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        s = q @ k.transpose(-1, -2) / math.sqrt(self.hd)
        vis = self.mask(T)[None]
        p = torch.softmax(s.masked_fill(~vis, float("-inf")), dim=-1)
        p = torch.nan_to_num(p, nan=0.0)  # a row that sees no key gives o = 0
        o = (p @ v).transpose(1, 2).reshape(B, T, self.hq * self.hd)
        return o @ self.wo.T


ENUMS = {"pattern": ["strided", "fixed"], "combine": ["heads", "layers", "merged"]}


def case(f, name, seed, mixer, opts, layer_index=0, n_layers=1, B=16, T=75, d=32, hq=4, h=2, hd=8):
    gen = torch.Generator().manual_seed(seed)
    m = Sparse(mixer, d, hq, h, hd, opts, layer_index, n_layers)
    for n in m.names:
        fill(getattr(m, n), 0.3, gen)
    x = torch.randn(B, T, d, generator=gen).float().double().requires_grad_()
    y = m(x)
    dy = torch.randn(y.shape, generator=gen).float().double()
    y.backward(dy)
    grp = f.create_group(name)
    a = grp.attrs
    a["mixer"] = np.bytes_(mixer)
    a["d_model"], a["n_heads"], a["n_kv_heads"], a["head_dim"] = d, hq, h, hd
    a["layer_index"], a["n_layers"] = layer_index, n_layers
    for key, val in opts.items():
        a[key] = ENUMS[key].index(val) if key in ENUMS else val
    for n in m.names:
        grp[f"params/{n}"] = f32(getattr(m, n))
        grp[f"grads/{n}"] = f32(getattr(m, n).grad)
    grp["x"], grp["dy"], grp["y"], grp["dx"] = f32(x), f32(dy), f32(y), f32(x.grad)
    seen = m.mask(T).double().mean().item()
    print(f"{name}: |y| {y.norm():.3f} |dx| {x.grad.norm():.3f}, {seen:.3f} of all pairs visible")


def main():
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    out = os.path.join(root, "tests", "golden", "sparse_layers.h5")
    with h5py.File(out, "w") as f:
        case(f, "st_strided_heads", 1, "sparse_transformer",
             {"pattern": "strided", "stride": 8, "combine": "heads"})
        case(f, "st_fixed_merged", 2, "sparse_transformer",
             {"pattern": "fixed", "stride": 12, "summary": 3, "combine": "merged", "distinct": 1})
        case(f, "st_fixed_layers_odd", 3, "sparse_transformer",
             {"pattern": "fixed", "stride": 16, "summary": 4, "combine": "layers", "distinct": 1},
             layer_index=1, n_layers=2)
        case(f, "lf_dilated_global", 4, "longformer",
             {"window": 12, "window_top": 28, "dilation": 2, "dilated_heads": 2, "n_global": 5},
             layer_index=1, n_layers=3)
        case(f, "bb_window_global", 5, "bigbird",
             {"block": 8, "window_blocks": 1, "global_blocks": 2, "random_blocks": 0})


if __name__ == "__main__":
    main()
