#!/usr/bin/env python3
"""The outside reference for learning: the same small models as attnlab's
experiments, written in plain PyTorch (the layers of tests/ref/
gen_full_attention.py and tests/ref/gen_mla_layers.py, written from the
papers), trained on the same task with the same recipe, so that "attnlab
learns as the reference does on the same budget" is a measurement.

Task: Kimi Linear's palindrome as data/palindrome.c lays it out (symbols
2..V-1, separator 1, L symbols then their reverse, L-1 scored positions),
fresh training examples drawn from each seed's generator, 256 held-out test
examples. Model: token embedding, n_layers x [x += mixer(RMSNorm(x))] (no
MLP), RMSNorm, untied head; N(0, init_std) init, the residual output
projections at init_std / sqrt(2 n_layers) with --residual-init scaled.
Recipe (kda_vs_full.yaml): AdamW (beta 0.9 / --beta2, eps 1e-8, weight decay
0.1 on matrices), linear warm-up then cosine to 0, global-norm clip 1.0.

    /usr/bin/python3 bench/torch_tasks.py --mixer full --steps 800 --seeds 0 1 2
    /usr/bin/python3 bench/torch_tasks.py --mixer mla --steps 800 --seeds 0 1 2

prints one line per seed: test accuracy and loss. Needs python3-torch; never
run by the tests.
"""
import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "ref"))
import gen_full_attention as fa  # noqa: E402
import gen_mla_layers as ml  # noqa: E402

torch.set_default_dtype(torch.float32)


def palindrome(n, V, L, gen):
    s = torch.randint(2, V, (n, L), generator=gen)
    tokens = torch.cat([s, torch.ones(n, 1, dtype=torch.long), s.flip(1)], dim=1)
    labels = torch.full_like(tokens, fa.IGNORE)
    labels[:, L + 1:2 * L] = tokens[:, L + 2:2 * L + 1]
    return tokens, labels


class LM(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        d = a.d_model
        self.emb = torch.nn.Parameter(torch.randn(a.vocab, d) * a.init_std)
        self.norms = torch.nn.ParameterList(torch.nn.Parameter(torch.ones(d)) for _ in range(a.layers))
        hd = d // a.heads
        if a.mixer == "full":
            mk = lambda: fa.Attention(d, a.heads, a.heads, hd, 0, "rope")  # noqa: E731
        else:
            mk = lambda: ml.MLA(4 * hd, 0, hd // 2 // 2 * 2, d=d, h=a.heads, hd=hd)  # noqa: E731
        self.mixers = torch.nn.ModuleList(mk() for _ in range(a.layers))
        out_std = a.init_std / math.sqrt(2 * a.layers) if a.residual_init == "scaled" else a.init_std
        with torch.no_grad():
            for m in self.mixers:
                for name, p in m.named_parameters():
                    if "norm" in name:
                        p.fill_(1)
                    else:
                        p.normal_(0, out_std if name in ("wo", "w_o") else a.init_std)
        self.final = torch.nn.Parameter(torch.ones(d))
        self.head = torch.nn.Parameter(torch.randn(a.vocab, d) * a.init_std)

    def forward(self, tokens):
        x = self.emb[tokens]
        for n, m in zip(self.norms, self.mixers):
            y = m(fa.rmsnorm(x, n))
            x = x + (y[0] if isinstance(y, tuple) else y)
        return fa.rmsnorm(x, self.final) @ self.head.T


def run(a, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(1000 + seed)
    model = LM(a)
    matrices = [p for p in model.parameters() if p.dim() == 2 and p is not model.emb]
    others = [p for p in model.parameters() if not (p.dim() == 2 and p is not model.emb)]
    opt = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1}, {"params": others, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, a.beta2), eps=1e-8)
    L = (a.seq_len - 1) // 2
    for step in range(a.steps):
        lr = a.lr * (step + 1) / a.warmup if step < a.warmup else \
            a.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - a.warmup) / max(1, a.steps - 1 - a.warmup))))
        for g in opt.param_groups:
            g["lr"] = lr
        tok, lab = palindrome(a.batch, a.vocab, L, gen)
        logits = model(tok)
        keep = lab != fa.IGNORE
        loss = torch.nn.functional.cross_entropy(logits[keep], lab[keep])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    tok, lab = palindrome(256, a.vocab, L, torch.Generator().manual_seed(99))
    with torch.no_grad():
        logits = model(tok)
        keep = lab != fa.IGNORE
        acc = (logits[keep].argmax(-1) == lab[keep]).float().mean().item()
        test_loss = torch.nn.functional.cross_entropy(logits[keep], lab[keep]).item()
    return acc, test_loss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mixer", choices=["full", "mla"], default="full")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=97)
    ap.add_argument("--vocab", type=int, default=32)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--beta2", type=float, default=0.95)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--init-std", type=float, default=0.02)
    ap.add_argument("--residual-init", choices=["scaled", "plain"], default="plain")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for seed in a.seeds:
        acc, loss = run(a, seed)
        print(f"torch mixer={a.mixer} residual_init={a.residual_init} steps={a.steps} seed={seed} "
              f"test_accuracy={acc:.4f} test_loss={loss:.4f}", flush=True)


if __name__ == "__main__":
    main()
