"""Reference values for tests/test_full_golden.c: a whole softmax-attention
layer and a whole 2-layer decoder LM with it, written here in plain PyTorch
from the papers (Vaswani et al. 2017 attention; RoFormer's rotate-half RoPE,
theta 10^4; pre-norm RMSNorm, eps 1e-5; no biases; an untied LM head;
cross-entropy over the labelled positions only), independent of attnlab's C.

Computed in float64 from float32-representable weights and inputs, stored as
float32, at the training shapes of experiments/kda_vs_full.yaml (B = 32,
T = 97, d_model 64, 2 heads of 32).

Run with /usr/bin/python3 (torch 1.13, h5py) from the source root:
    /usr/bin/python3 tests/ref/gen_full_attention.py
It writes tests/golden/full_attention.h5. The tests never run this script.

Groups:
  layer_<name>: attributes d_model, n_heads, n_kv_heads, head_dim, window,
      position (rope | nope); datasets params/<wq|wk|wv|wo>, x [B,T,d], dy,
      y, dx, grads/<name>.
  model_<name>: attributes as above plus vocab_size, n_layers; datasets
      params/<attnlab name> (tok_emb, layers.<i>.norm1, layers.<i>.full.wq ...,
      final_norm, lm_head), tokens [B,T] and labels [B,T] (int32, -100 where
      unlabelled), attributes loss and n_correct, grads/<attnlab name>.
"""
import math
import os

import h5py
import numpy as np
import torch

torch.set_default_dtype(torch.float64)
IGNORE = -100


def rope(x, theta=10000.0):
    """x [B, T, H, D]; pairs (i, i + D/2) rotated by t * theta^(-2i/D)."""
    T, D = x.shape[1], x.shape[-1]
    half = D // 2
    inv = theta ** (-2.0 * torch.arange(half) / D)
    ang = torch.arange(T)[:, None] * inv[None, :]
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


class Attention(torch.nn.Module):
    def __init__(self, d, hq, h, hd, window=0, position="rope"):
        super().__init__()
        self.hq, self.h, self.hd, self.window, self.position = hq, h, hd, window, position
        self.wq = torch.nn.Parameter(torch.empty(hq * hd, d))
        self.wk = torch.nn.Parameter(torch.empty(h * hd, d))
        self.wv = torch.nn.Parameter(torch.empty(h * hd, d))
        self.wo = torch.nn.Parameter(torch.empty(d, hq * hd))

    def forward(self, x):
        B, T, _ = x.shape
        q = (x @ self.wq.T).view(B, T, self.hq, self.hd)
        k = (x @ self.wk.T).view(B, T, self.h, self.hd)
        v = (x @ self.wv.T).view(B, T, self.h, self.hd)
        if self.position == "rope":
            q, k = rope(q), rope(k)
        g = self.hq // self.h  # query head j reads kv head j // g
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        s = q @ k.transpose(-1, -2) / math.sqrt(self.hd)
        i = torch.arange(T)[:, None]
        j = torch.arange(T)[None, :]
        hidden = j > i
        if self.window:
            hidden = hidden | (j <= i - self.window)
        p = torch.softmax(s.masked_fill(hidden, float("-inf")), dim=-1)
        o = (p @ v).transpose(1, 2).reshape(B, T, self.hq * self.hd)
        return o @ self.wo.T


def rmsnorm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


class LM(torch.nn.Module):
    def __init__(self, V, d, n_layers, **attn):
        super().__init__()
        self.tok_emb = torch.nn.Parameter(torch.empty(V, d))
        self.norms = torch.nn.ParameterList(torch.nn.Parameter(torch.empty(d)) for _ in range(n_layers))
        self.attn = torch.nn.ModuleList(Attention(d, **attn) for _ in range(n_layers))
        self.final_norm = torch.nn.Parameter(torch.empty(d))
        self.lm_head = torch.nn.Parameter(torch.empty(V, d))

    def named(self):
        """(attnlab name, parameter) pairs."""
        out = [("tok_emb", self.tok_emb)]
        for i, (n, a) in enumerate(zip(self.norms, self.attn)):
            out.append((f"layers.{i}.norm1", n))
            out += [(f"layers.{i}.full.{w}", getattr(a, w)) for w in ("wq", "wk", "wv", "wo")]
        return out + [("final_norm", self.final_norm), ("lm_head", self.lm_head)]

    def forward(self, tokens, labels):
        x = self.tok_emb[tokens]
        for n, a in zip(self.norms, self.attn):
            x = x + a(rmsnorm(x, n))
        logits = rmsnorm(x, self.final_norm) @ self.lm_head.T
        keep = labels != IGNORE
        loss = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
        correct = int((logits[keep].argmax(-1) == labels[keep]).sum())
        return loss, correct


def f32(t):
    return t.detach().float().numpy()


def fill(p, std, gen):
    with torch.no_grad():
        p.copy_((torch.randn(p.shape, generator=gen) * std).float().double())


def palindrome_batch(B, T, V, L, gen):
    """Kimi Linear's palindrome as data/palindrome.c lays it out:
    s0..s(L-1) <sep> s(L-1)..s0 (symbols 2..V-1, separator 1), each reversed
    symbol after the first predicted from the one before it; T = 2L + 1."""
    s = torch.randint(2, V, (B, L), generator=gen)
    tokens = torch.cat([s, torch.ones(B, 1, dtype=torch.long), s.flip(1)], dim=1)[:, :T]
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    labels[:, L + 1:T - 1] = tokens[:, L + 2:T]
    return tokens, labels


def attrs(grp, d, hq, h, hd, window, position):
    a = grp.attrs
    a["d_model"], a["n_heads"], a["n_kv_heads"], a["head_dim"] = d, hq, h, hd
    a["window"], a["position"] = window, np.bytes_(position)


def layer_case(f, name, seed, B, T, d, hq, h, hd, window, position):
    gen = torch.Generator().manual_seed(seed)
    m = Attention(d, hq, h, hd, window, position)
    for w in ("wq", "wk", "wv", "wo"):  # large enough that the softmax is far from uniform
        fill(getattr(m, w), 0.25, gen)
    x = (torch.randn(B, T, d, generator=gen)).float().double().requires_grad_()
    y = m(x)
    dy = torch.randn(y.shape, generator=gen).float().double()
    y.backward(dy)
    grp = f.create_group(f"layer_{name}")
    attrs(grp, d, hq, h, hd, window, position)
    for w in ("wq", "wk", "wv", "wo"):
        grp[f"params/{w}"] = f32(getattr(m, w))
        grp[f"grads/{w}"] = f32(getattr(m, w).grad)
    grp["x"], grp["dy"], grp["y"], grp["dx"] = f32(x), f32(dy), f32(y), f32(x.grad)
    print(f"layer_{name}: |y| {y.norm():.3f} |dx| {x.grad.norm():.3f}")


def model_case(f, name, seed, B, V, L, d, n_layers, hq, h, hd, window, position):
    T = 2 * L + 1
    gen = torch.Generator().manual_seed(seed)
    m = LM(V, d, n_layers, hq=hq, h=h, hd=hd, window=window, position=position)
    for key, p in m.named():
        if "norm" in key:
            with torch.no_grad():
                p.copy_((1 + 0.2 * torch.randn(p.shape, generator=gen)).float().double())
        else:
            fill(p, 0.5 if key == "tok_emb" else 0.15, gen)
    tokens, labels = palindrome_batch(B, T, V, L, gen)
    loss, correct = m(tokens, labels)
    loss.backward()
    grp = f.create_group(f"model_{name}")
    attrs(grp, d, hq, h, hd, window, position)
    grp.attrs["vocab_size"], grp.attrs["n_layers"] = V, n_layers
    for key, p in m.named():
        grp[f"params/{key}"] = f32(p)
        grp[f"grads/{key}"] = f32(p.grad)
    grp["tokens"] = tokens.int().numpy()
    grp["labels"] = labels.int().numpy()
    grp.attrs["loss"], grp.attrs["n_correct"] = loss.item(), correct
    print(f"model_{name}: loss {loss.item():.6f}, {correct} correct")


def main():
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    out = os.path.join(root, "tests", "golden", "full_attention.h5")
    with h5py.File(out, "w") as f:
        # kda_vs_full's full layer: d 64, 2 heads of 32, RoPE, B 32, T 97
        layer_case(f, "rope", 1, 32, 97, 64, 2, 2, 32, 0, "rope")
        # GQA with a window and a ragged length (not a multiple of the tiles)
        layer_case(f, "gqa_window", 2, 16, 83, 64, 4, 2, 16, 24, "rope")
        layer_case(f, "nope", 3, 16, 70, 32, 2, 1, 16, 0, "nope")
        # kda_vs_full's full run on palindrome: V 32, L 48 (T 97), 2 layers
        model_case(f, "rope", 4, 32, 32, 48, 64, 2, 2, 2, 32, 0, "rope")
        model_case(f, "gqa_window", 5, 16, 32, 41, 64, 2, 4, 2, 16, 32, "rope")


if __name__ == "__main__":
    main()
