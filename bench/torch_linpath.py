#!/usr/bin/env python3
"""PyTorch versions of the linear path's mixers (models/linear_attn.c,
models/performer.c, models/retnet.c), written from the papers and from
flash-linear-attention's layer definitions (fla/layers/linear_attn.py,
fla/layers/multiscale_retention.py), and a trainer that trains the same
decoder LM as attnlab (token embedding tied to the head, pre-norm RMSNorm
blocks [mixer, optional SwiGLU], final RMSNorm) on batches written by
build/bench/dump_task, with attnlab's optimiser settings (AdamW betas 0.9 /
0.95, eps 1e-8, weight decay off for norms, biases and embeddings, global
gradient clipping, linear warm-up then cosine to 0).

    build/bench/dump_task experiments/linpath_mqar.yaml 0 /tmp/d.h5
    /usr/bin/python3 bench/torch_linpath.py --data /tmp/d.h5 --mixer linear_attn \
        --d-model 64 --heads 2 --layers 2 --mlp 0 --steps 400 --lr 3e-3 --warmup 40 --seed 0

prints one line: torch mixer=... seed=... eval_loss=... eval_accuracy=... bits_per_byte=...

Cores (the attention part), chosen with core=:
  "parallel": the masked T x T forms (fast in PyTorch at the training lengths);
  "fla":      flash-linear-attention's naive recurrent reference ops (the
              golden generator tests/ref/gen_linpath_layers.py uses these;
              pass the module with set_fla()).
Parameter names are attnlab's (q_proj, g_norm.weight, ...). Never run by the tests.
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

FLA = {}  # "linear_attn", "retention": fla's naive modules (set_fla)


def set_fla(linear_attn_naive, retention_naive):
    FLA["linear_attn"], FLA["retention"] = linear_attn_naive, retention_naive


def rmsnorm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, theta=10000.0):
    """x [B, T, H, D]; rotate-half pairing (i, i + D/2), angle t theta^(-2i/D)."""
    T, D = x.shape[1], x.shape[-1]
    half = D // 2
    inv = theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / D)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = ang.cos().to(x.dtype)[None, :, None, :], ang.sin().to(x.dtype)[None, :, None, :]
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


def causal_linear(q, k, v, scale, normalize, decay=None, eps=1e-10):
    """o_t = sum_{s<=t} D[t,s] (q_t . k_s) v_s scale (/ sum_s D[t,s] q_t . k_s scale + eps):
    q, k [B,T,H,K], v [B,T,H,V]; decay [H] log-decays (None: 1)."""
    T = q.shape[1]
    q, k, v = (x.transpose(1, 2) for x in (q * scale, k, v))
    A = q @ k.transpose(-1, -2)
    t = torch.arange(T)
    diff = (t[:, None] - t[None, :]).to(q.dtype)
    if decay is None:
        D = (diff >= 0).to(q.dtype)
    else:  # mask before exp
        D = torch.exp(decay.view(-1, 1, 1) * diff.clamp(min=0)) * (diff >= 0)
    A = A * D
    o = A @ v
    if normalize:
        o = o / (A.sum(-1, keepdim=True) + eps)
    return o.transpose(1, 2)


class LinearAttention(nn.Module):
    """Katharopoulos et al.; fla's LinearAttention (feature_map, do_feature_map_norm, output_norm)."""

    def __init__(self, d, heads, head_dim, feature_map="elu", normalize=True, output_norm="none", eps=1e-5,
                 core="parallel"):
        super().__init__()
        self.H, self.K, self.fm, self.normalize, self.eps, self.core = heads, head_dim, feature_map, normalize, eps, core
        HK = heads * head_dim
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d, HK, bias=False) for _ in range(3))
        self.norm = nn.Parameter(torch.ones(head_dim)) if output_norm == "rmsnorm" else None
        self.o_proj = nn.Linear(HK, d, bias=False)

    def phi(self, x):
        return {"elu": lambda y: F.elu(y) + 1, "relu": F.relu, "identity": lambda y: y}[self.fm](x)

    def forward(self, x):
        B, T, _ = x.shape
        shape = (B, T, self.H, self.K)
        q, k = self.phi(self.q_proj(x).view(shape)), self.phi(self.k_proj(x).view(shape))
        v = self.v_proj(x).view(shape)
        if self.core == "fla":
            o, _ = FLA["linear_attn"].naive_recurrent_linear_attn(q, k, v, normalize=self.normalize)
        else:
            o = causal_linear(q, k, v, self.K ** -0.5, self.normalize)
        if self.norm is not None:
            o = rmsnorm(o, self.norm, self.eps)
        return self.o_proj(o.reshape(B, T, -1))


def favor_features(m, K, orthogonal=True, gen=None):
    """Omega [m, K]: orthogonal blocks (QR of Gaussian blocks), rows scaled by chi_K lengths; or iid."""
    if not orthogonal:
        return torch.randn(m, K, generator=gen)
    blocks = []
    for _ in range((m + K - 1) // K):
        q, _ = torch.linalg.qr(torch.randn(K, K, generator=gen))
        blocks.append(q.T)
    W = torch.cat(blocks, 0)[:m]
    return W * torch.randn(m, K, generator=gen).norm(dim=1, keepdim=True)


class Performer(nn.Module):
    """Choromanski et al. 2021, causal FAVOR+ with m random features redrawn every redraw_every steps."""

    def __init__(self, d, heads, head_dim, num_features=0, redraw_every=1000, orthogonal=True, core="parallel",
                 seed=0):
        super().__init__()
        self.H, self.K, self.m = heads, head_dim, num_features or 2 * head_dim
        self.redraw_every, self.orthogonal, self.core = redraw_every, orthogonal, core
        HK = heads * head_dim
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d, HK, bias=False) for _ in range(3))
        self.o_proj = nn.Linear(HK, d, bias=False)
        self.gen = torch.Generator().manual_seed(seed)
        self.register_buffer("omega", favor_features(self.m, head_dim, orthogonal, self.gen))
        self.draw, self.pinned = 0, False

    def set_step(self, step):
        draw = step // self.redraw_every if self.redraw_every else 0
        if draw != self.draw and not self.pinned:
            self.omega = favor_features(self.m, self.K, self.orthogonal, self.gen).to(self.omega.dtype)
            self.draw = draw

    def logits(self, x):
        xh = x * self.K ** -0.25
        return xh @ self.omega.T - 0.5 * (xh * xh).sum(-1, keepdim=True)

    def forward(self, x):
        B, T, _ = x.shape
        shape = (B, T, self.H, self.K)
        lq, lk = self.logits(self.q_proj(x).view(shape)), self.logits(self.k_proj(x).view(shape))
        v = self.v_proj(x).view(shape)
        if self.core == "fla":  # the paper's features, unstabilised (small inputs: float64 references)
            fq, fk = torch.exp(lq) / self.m ** 0.5, torch.exp(lk) / self.m ** 0.5
            o, _ = FLA["linear_attn"].naive_recurrent_linear_attn(fq, fk, v, scale=1.0, normalize=True)
        else:  # max-stabilised: per query, and over the keys of the sequence (both cancel in the ratio)
            fq = torch.exp(lq - lq.amax(-1, keepdim=True).detach())
            fk = torch.exp(lk - lk.amax(dim=(1, 3), keepdim=True).detach())
            o = causal_linear(fq, fk, v, 1.0, True)
        return self.o_proj(o.reshape(B, T, -1))


class RetNet(nn.Module):
    """Sun et al. 2023; fla's MultiScaleRetention (RoPE, expand_v, swish gate) with the paper's GroupNorm or fla's RMSNorm."""

    def __init__(self, d, heads, head_dim, expand_v=2, norm="groupnorm", gate="swish", eps=1e-5, rope_theta=10000.0,
                 core="parallel"):
        super().__init__()
        self.H, self.K, self.V = heads, head_dim, expand_v * head_dim
        self.norm_kind, self.eps, self.theta, self.core = norm, eps, rope_theta, core
        HK, HV = heads * head_dim, heads * self.V
        self.q_proj, self.k_proj = nn.Linear(d, HK, bias=False), nn.Linear(d, HK, bias=False)
        self.v_proj = nn.Linear(d, HV, bias=False)
        self.g_proj = nn.Linear(d, HV, bias=False) if gate == "swish" else None
        if norm == "rmsnorm":
            self.g_norm = nn.Parameter(torch.ones(self.V))
        else:
            self.g_norm = nn.ParameterDict({"weight": nn.Parameter(torch.ones(heads, self.V)),
                                            "bias": nn.Parameter(torch.zeros(heads, self.V))})
        self.o_proj = nn.Linear(HV, d, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        q = rope(self.q_proj(x).view(B, T, self.H, self.K), self.theta)
        k = rope(self.k_proj(x).view(B, T, self.H, self.K), self.theta)
        v = self.v_proj(x).view(B, T, self.H, self.V)
        if self.core == "fla":
            o = FLA["retention"].naive_retention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        else:
            gamma = torch.log1p(-torch.pow(2.0, -5.0 - torch.arange(self.H, dtype=torch.float64))).to(q.dtype)
            o = causal_linear(q, k, v, self.K ** -0.5, False, gamma)
        if self.norm_kind == "rmsnorm":
            o = rmsnorm(o, self.g_norm, self.eps)
        else:
            o = F.layer_norm(o, (self.V,), eps=self.eps) * self.g_norm["weight"] + self.g_norm["bias"]
        if self.g_proj is not None:
            o = o * F.silu(self.g_proj(x).view(B, T, self.H, self.V))
        return self.o_proj(o.reshape(B, T, -1))


def attnlab_names(module, prefix=""):
    """(attnlab parameter name, parameter): nn.Linear weights drop '.weight'."""
    out = []
    for key, p in module.named_parameters():
        name = key[: -len(".weight")] if key.endswith(".weight") and not key.startswith("g_norm.") else key
        out.append((prefix + name, p))
    return out


class Block(nn.Module):
    def __init__(self, d, mixer, hidden):
        super().__init__()
        self.norm1, self.mixer = nn.Parameter(torch.ones(d)), mixer
        if hidden:
            self.norm2 = nn.Parameter(torch.ones(d))
            self.w_gate, self.w_up = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False)
            self.w_down = nn.Linear(hidden, d, bias=False)
        self.hidden = hidden

    def forward(self, x):
        x = x + self.mixer(rmsnorm(x, self.norm1))
        if self.hidden:
            h = rmsnorm(x, self.norm2)
            x = x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))
        return x


class LM(nn.Module):
    def __init__(self, vocab, d, layers, make_mixer, hidden, init_std=0.02):
        super().__init__()
        self.tok_emb = nn.Parameter(torch.randn(vocab, d) * init_std)
        self.blocks = nn.ModuleList(Block(d, make_mixer(i), hidden) for i in range(layers))
        self.final_norm = nn.Parameter(torch.ones(d))
        out_std = init_std / math.sqrt(2 * layers)
        for name, p in self.named_parameters():  # GPT-2 init as attnlab's
            if name.endswith("o_proj.weight") or name.endswith("w_down.weight"):
                nn.init.normal_(p, 0, out_std)
            elif p.dim() == 2 and "g_norm" not in name and name != "tok_emb":
                nn.init.normal_(p, 0, init_std)

    def forward(self, tokens):
        x = self.tok_emb[tokens]
        for b in self.blocks:
            x = b(x)
        return rmsnorm(x, self.final_norm) @ self.tok_emb.T


def lr_at(step, lr, warmup, total):
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    last = total - 1
    u = 0.0 if last <= warmup else min(1.0, max(0.0, (step - warmup) / (last - warmup)))
    return lr * 0.5 * (1 + math.cos(math.pi * u))


def evaluate(model, tokens, labels, batch):
    loss_sum, n, correct = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, tokens.shape[0], batch):
            logits, lab = model(tokens[i:i + batch]), labels[i:i + batch]
            keep = lab != -100
            z, y = logits[keep], lab[keep]
            loss_sum += F.cross_entropy(z, y, reduction="sum").item()
            correct += int((z.argmax(-1) == y).sum())
            n += int(keep.sum())
    return loss_sum / n, correct / n


def main():
    import h5py

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="HDF5 from build/bench/dump_task")
    ap.add_argument("--mixer", required=True, choices=["linear_attn", "performer", "retnet"])
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--mlp", type=int, default=0, help="SwiGLU hidden size (0: no MLP)")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--redraw-every", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    with h5py.File(args.data, "r") as f:
        tr_tok, tr_lab = (torch.from_numpy(f[k][()]).long() for k in ("train_tokens", "train_labels"))
        te_tok, te_lab = (torch.from_numpy(f[k][()]).long() for k in ("test_tokens", "test_labels"))
        B, V, task = int(f.attrs["batch_size"]), int(f.attrs["vocab_size"]), f.attrs["task"]
        task = task.decode() if isinstance(task, bytes) else str(task)
    d, H = args.d_model, args.heads
    hd = d // H
    mixers = {
        "linear_attn": lambda i: LinearAttention(d, H, hd),
        "performer": lambda i: Performer(d, H, hd, redraw_every=args.redraw_every, seed=1000 * args.seed + i),
        "retnet": lambda i: RetNet(d, H, hd),
    }
    model = LM(V, d, args.layers, mixers[args.mixer], args.mlp)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and n != "tok_emb" and "g_norm" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() == 2 and n != "tok_emb" and "g_norm" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    t0 = time.perf_counter()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.lr, args.warmup, args.steps)
        for mod in model.modules():
            if isinstance(mod, Performer):
                mod.set_step(step)
        tok, lab = tr_tok[step * B:(step + 1) * B], tr_lab[step * B:(step + 1) * B]
        logits = model(tok)
        keep = lab != -100
        loss = F.cross_entropy(logits[keep], lab[keep])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
    train_s = time.perf_counter() - t0
    el, acc = evaluate(model, te_tok, te_lab, B)
    bpb = el / math.log(2) if task == "text" else float("nan")
    print(f"torch mixer={args.mixer} seed={args.seed} eval_loss={el:.4f} eval_accuracy={acc:.4f} "
          f"bits_per_byte={bpb:.4f} tokens_per_second={args.steps * B * tok.shape[1] / train_s:.0f}")


if __name__ == "__main__":
    main()
