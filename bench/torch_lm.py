#!/usr/bin/env python3
"""PyTorch CPU reference for attnlab's training-throughput benchmark.

Builds the same decoder LM as attnlab's models/ (token embedding, pre-norm
blocks [RMSNorm -> mixer -> residual -> RMSNorm -> SwiGLU -> residual],
final RMSNorm, LM head) with a softmax-attention mixer (RoPE, causal) or a
KDA mixer (chunkwise, pure PyTorch), and times full training steps
(forward, backward, AdamW) on random tokens. Prints one line:

    torch mixer=full tokens_per_second=12345.6 step_ms=...

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


class LM(nn.Module):
    def __init__(self, args):
        super().__init__()
        d = args.d_model
        self.emb = nn.Embedding(args.vocab, d)
        mixers = {"full": lambda: FullAttention(d, args.heads, args.kv_heads)}
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
    ap.add_argument("--mixer", default="full", choices=["full"])
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
