#!/usr/bin/env python3
"""experiments/selective_copy.yaml in PyTorch: the same task, model around the
mixer and budget, with the authors' layers where they exist.

Mixers: mamba (mamba_simple.Mamba of state-spaces/mamba on its reference path,
with selective_scan_ref), s4d (the S4D block of state-spaces/s4's s4d.py with
a trained B, tests/ref/ssm_ref.py), mamba2 and full (bench/torch_lm.py's
plain PyTorch versions of attnlab's layers). Model: embedding, 2 pre-norm
blocks (RMSNorm -> mixer -> residual, no MLP), final RMSNorm, untied head;
AdamW (0.9, 0.95), lr 2e-3, weight decay 0.1 on matrices (not embeddings,
norms, biases, SSM parameters), linear warm-up 50 then cosine to 0, clip
1.0, batch 32, 800 steps. Data: the layout of data/selective_copy.c (K
symbols from [2, V) at a uniform K-subset of the first T - K - 1 positions,
noise 0, separator 1, the answers labelled after it), drawn here with
torch's generator (the same distribution, not the same examples). Prints the
test accuracy on 512 held-out sequences.

    /usr/bin/python3 bench/torch_selective_copy.py --mixer mamba --seed 0 --mamba /tmp/mamba --s4 /tmp/s4

Never run by the tests.
"""
import argparse
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "ref"))
import torch_lm as tl  # noqa: E402
import ssm_ref  # noqa: E402


def batch(n, T, K, V, g):
    R = T - K - 1
    tok = torch.zeros(n, T, dtype=torch.long)
    lab = torch.full((n, T), -100, dtype=torch.long)
    pos = torch.rand(n, R, generator=g).argsort(-1)[:, :K].sort(-1).values
    sym = torch.randint(2, V, (n, K), generator=g)
    tok.scatter_(1, pos, sym)
    tok[:, R] = 1
    lab[:, R + 1:] = sym
    return tok, lab


class LM(nn.Module):
    def __init__(self, mixer, V, d):
        super().__init__()
        make = {
            "mamba": lambda: ssm_ref.mamba_layer(d, d_state=16, expand=2, d_conv=4),
            "s4d": lambda: ssm_ref.S4DLayer(d, d_state=64),
            "mamba2": lambda: tl.Mamba2Mixer(d, 32, d_state=16, chunk=64),
            "full": lambda: tl.FullAttention(d, 2, 2),
        }[mixer]
        self.emb = nn.Embedding(V, d)
        nn.init.normal_(self.emb.weight, std=0.02)
        self.blocks = nn.ModuleList(tl.Block(d, make(), 0) for _ in range(2))
        self.norm = tl.RMSNorm(d)
        self.head = nn.Linear(d, V, bias=False)

    def forward(self, tok):
        x = self.emb(tok)
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x))


NO_DECAY = ("A_log", "log_A_real", "A_imag", "log_dt", ".B", "D", "dt_bias", "norm")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mixer", required=True, choices=["mamba", "s4d", "mamba2", "full"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=18)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mamba", default="")
    ap.add_argument("--s4", default="")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    model = LM(a.mixer, a.vocab, a.d_model)
    decay, other = [], []
    for n, p in model.named_parameters():
        (decay if p.ndim >= 2 and "emb" not in n and not any(s in n for s in NO_DECAY) else other).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    warm = 50
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (a.steps - warm))))
    g = torch.Generator().manual_seed(1000 + a.seed)
    t0 = time.perf_counter()
    for step in range(a.steps):
        tok, lab = batch(a.batch, a.seq_len, a.tokens, a.vocab, g)
        loss = F.cross_entropy(model(tok).view(-1, a.vocab), lab.view(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f}", file=sys.stderr)
    train_s = time.perf_counter() - t0
    gt = torch.Generator().manual_seed(99)
    correct = total = 0
    with torch.no_grad():
        for _ in range(4):
            tok, lab = batch(128, a.seq_len, a.tokens, a.vocab, gt)
            pred = model(tok).argmax(-1)
            m = lab != -100
            correct += (pred[m] == lab[m]).sum().item()
            total += m.sum().item()
    print(f"torch selective_copy mixer={a.mixer} seed={a.seed} accuracy={correct / total:.4f} "
          f"final_loss={loss.item():.4f} tokens_per_second={a.steps * a.batch * a.seq_len / train_s:.0f}")


if __name__ == "__main__":
    main()
