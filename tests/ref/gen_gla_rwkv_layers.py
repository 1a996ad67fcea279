"""Reference values for tests/test_gla_rwkv_golden.c: whole gla and rwkv7
layers and 2-layer LMs with them (rwkv7 with RWKV's channel mix, gla with
SwiGLU), computed by the independent PyTorch implementation in
bench/torch_gla_rwkv.py in float64 from float32-representable weights and
inputs, stored as float32, at training shapes (B 16, T 77: ragged against
chunks of 64 and 16; d_model 32, 2 heads).

Before writing, it holds the PyTorch cores against each other (chunkwise =
token by token in float64, to 1e-12) and against flash-linear-attention's
naive reference ops (fla/ops/gla/naive.py naive_recurrent_gla and
fla/ops/generalized_delta_rule/dplr/naive.py dplr_recurrence, which compute
in float32), imported from files extracted from a checkout:

    git --git-dir=<fla mirror> show HEAD:fla/ops/gla/naive.py > /tmp/fla_gla/naive.py
    git --git-dir=<fla mirror> show HEAD:fla/ops/generalized_delta_rule/dplr/naive.py > /tmp/fla_dplr/naive.py
    /usr/bin/python3 tests/ref/gen_gla_rwkv_layers.py /tmp/fla_gla/naive.py /tmp/fla_dplr/naive.py

It writes tests/golden/gla_rwkv_layers.h5. The tests never run this script.

Groups:
  layer_<name>: attributes mixer, d_model, n_heads, layer (its index; an
      rwkv7 layer after the first takes v_first), opt_<key> (mixer options);
      datasets params/<name> (attnlab's names under the layer), x [B,T,d], dy,
      y, dx, grads/<name>, and v_first, dv_first for a later rwkv7 layer.
  model_<name>: attributes vocab_size, d_model, n_heads, n_layers, layers
      ("rwkv7,rwkv7"), mlp, mlp_hidden, tie, opt_<key>; datasets
      params/<attnlab name>, tokens, labels [B,T] (int32, -100 unscored),
      grads/<attnlab name>; attributes loss and n_correct.
"""
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import torch_gla_rwkv as tg  # noqa: E402
from gen_dplr_golden import load_naive  # noqa: E402  (tests/ref is the script's dir)

torch.set_default_dtype(torch.float64)
B, T, D, H = 16, 77, 32, 2
GATES = {"sigmoid": 0, "swish": 1, "none": 2}  # at_out_gate


def rel(a, b):
    return float((a - b).norm() / b.norm())


def check_cores(gla_naive, dplr_naive):
    g = torch.Generator().manual_seed(3)
    Bc, Tc, Hc, K, V = 2, 45, 2, 8, 5
    q, k = torch.randn(Bc, Tc, Hc, K, generator=g), torch.randn(Bc, Tc, Hc, K, generator=g) / K ** 0.5
    v = torch.randn(Bc, Tc, Hc, V, generator=g)
    kap = torch.nn.functional.normalize(torch.randn(Bc, Tc, Hc, K, generator=g), dim=-1)
    a, b = -kap, kap * torch.rand(Bc, Tc, Hc, K, generator=g)
    gk = torch.nn.functional.logsigmoid(torch.randn(Bc, Tc, Hc, K, generator=g)) * 2
    gk[:, ::7] = -30.0  # strong decays on some tokens
    h0 = torch.randn(Bc, Hc, K, V, generator=g)
    for C in (1, 4, 16, 64):
        o1, s1 = tg.dplr_chunk(q, k, v, a, b, gk, chunk=C, h0=h0)
        o2, s2 = tg.dplr_recurrent(q, k, v, a, b, gk, h0=h0)
        assert rel(o1, o2) < 1e-12 and rel(s1, s2) < 1e-12, (C, rel(o1, o2))
        o1, s1 = tg.dplr_chunk(q, k, v, None, None, gk, chunk=C, h0=h0)
        o2, s2 = tg.gla_recurrent(q, k, v, gk, h0=h0)
        assert rel(o1, o2) < 1e-12 and rel(s1, s2) < 1e-12, (C, rel(o1, o2))
    # against fla's naive ops (float32 inside)
    f = lambda x: x.float()  # noqa: E731
    o_f, s_f = gla_naive.naive_recurrent_gla(f(q), f(k), f(v), f(gk), f(h0), output_final_state=True)
    o, s = tg.gla_recurrent(q, k, v, gk, h0=h0)
    assert rel(o_f.double(), o) < 1e-5 and rel(s_f.double(), s) < 1e-5, rel(o_f.double(), o)
    hf = lambda x: x.float().transpose(1, 2)  # noqa: E731
    o_f, s_f = dplr_naive.dplr_recurrence(hf(q), hf(k), hf(v), hf(a), hf(b), hf(gk), f(h0), True)
    o, s = tg.dplr_recurrent(q, k, v, a, b, gk, h0=h0)
    assert rel(o_f.transpose(1, 2).double(), o) < 1e-5 and rel(s_f.double(), s) < 1e-5
    print("cores: chunk = recurrent (1e-12), = fla naive gla and dplr (1e-5, float32)")


def f32(t):
    return t.detach().float().numpy()


def randomize(named, gen):
    """Every path alive: init + N(0, 0.3) for rwkv7 (decay biases in range),
    N(0, 0.3) weights for gla with norms 1 + N(0, 0.2) and biases N(0, 0.5)."""
    with torch.no_grad():
        for n, p in named:
            z = torch.randn(p.shape, generator=gen)
            if ".rwkv7." in n or n.startswith("rwkv7."):
                p.add_(0.3 * z)
            elif n.endswith("norm") or "norm" in n.split(".")[-1]:
                p.copy_(1 + 0.2 * z)
            elif n.endswith("bias"):
                p.copy_(0.5 * z)
            elif n == "tok_emb":
                p.copy_(0.5 * z)
            else:
                p.copy_(0.3 * z)
            p.copy_(p.float().double())


def set_opts(grp, opts):
    for k, v in opts.items():
        grp.attrs[f"opt_{k}"] = float(GATES[v] if k == "output_gate" else v)


def layer_case(f, name, mixer, opts, layer, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    m = tg.MIXERS[mixer](D, H, first=(layer == 0), **opts)
    m.init(0.02, layer + 1, layer)
    named = m.named(f"{mixer}.")
    randomize(named, gen)
    x = torch.randn(B, T, D, generator=gen).float().double().requires_grad_()
    vf = None
    if mixer == "rwkv7" and layer > 0:
        vf = torch.randn(B, T, H * m.K, generator=gen).float().double().requires_grad_()
    y, _ = m(x, vf)
    dy = torch.randn(y.shape, generator=gen).float().double()
    y.backward(dy)
    grp = f.create_group(f"layer_{name}")
    grp.attrs["mixer"], grp.attrs["d_model"], grp.attrs["n_heads"], grp.attrs["layer"] = np.bytes_(mixer), D, H, layer
    set_opts(grp, opts)
    for n, p in named:
        key = n[len(mixer) + 1:]
        grp[f"params/{key}"], grp[f"grads/{key}"] = f32(p), f32(p.grad)
    grp["x"], grp["dy"], grp["y"], grp["dx"] = f32(x), f32(dy), f32(y), f32(x.grad)
    if vf is not None:
        grp["v_first"], grp["dv_first"] = f32(vf), f32(vf.grad)
    print(f"layer_{name}: {sum(p.numel() for _, p in named)} params, |y| {y.norm():.3f}, |dx| {x.grad.norm():.3f}")


def model_case(f, name, layers, mlp, hidden, tie, opts, seed, V=64):
    gen = torch.Generator().manual_seed(seed)
    m = tg.LM(V, D, layers, H, mlp, hidden, tie, {layers[0]: opts})
    m.init(0.02, seed)
    named = [(n, p) for n, p, _ in m.named()]
    randomize(named, gen)
    tokens = torch.randint(0, V, (B, T), generator=gen)
    labels = torch.randint(0, V, (B, T), generator=gen)
    labels[torch.rand(B, T, generator=gen) < 0.6] = tg.IGNORE
    loss, correct, _ = m.loss(tokens, labels)
    loss.backward()
    grp = f.create_group(f"model_{name}")
    a = grp.attrs
    a["vocab_size"], a["d_model"], a["n_heads"], a["n_layers"] = V, D, H, len(layers)
    a["layers"], a["mlp"], a["mlp_hidden"], a["tie"] = np.bytes_(",".join(layers)), np.bytes_(mlp), hidden, int(tie)
    set_opts(grp, opts)
    for n, p in named:
        grp[f"params/{n}"], grp[f"grads/{n}"] = f32(p), f32(p.grad)
    grp["tokens"], grp["labels"] = tokens.int().numpy(), labels.int().numpy()
    a["loss"], a["n_correct"] = loss.item(), correct
    print(f"model_{name}: loss {loss.item():.6f}, {correct} correct")


def main():
    gla_naive = load_naive(sys.argv[1] if len(sys.argv) > 1 else "/tmp/fla_gla/naive.py")
    dplr_naive = load_naive(sys.argv[2] if len(sys.argv) > 2 else "/tmp/fla_dplr/naive.py")
    check_cores(gla_naive, dplr_naive)
    out = os.path.join(os.path.dirname(__file__), "..", "golden", "gla_rwkv_layers.h5")
    with h5py.File(out, "w") as f:
        layer_case(f, "gla", "gla", {}, 0, 1)  # fla's defaults: expand_k 0.5, swish, rank 16
        layer_case(f, "gla_conv_sigmoid_clamp", "gla", dict(short_conv=1, conv_size=4, output_gate="sigmoid",
                                                           expand_k=1, expand_v=2, clamp_min=-0.05,
                                                           gate_logit_normalizer=4, chunk_size=16), 0, 2)
        layer_case(f, "gla_nogate", "gla", dict(output_gate="none", gate_low_rank_dim=8), 0, 3)
        layer_case(f, "rwkv7_first", "rwkv7", {}, 0, 4)  # default LoRA ranks (32)
        layer_case(f, "rwkv7_later", "rwkv7", dict(chunk_size=16, decay_low_rank_dim=8, a_low_rank_dim=16,
                                                   v_low_rank_dim=8, gate_low_rank_dim=24), 1, 5)
        # seed 8: the weights of seed 6 made a model whose second layer amplifies float rounding
        # (PyTorch's own float32 run of that layer was 6e-5 off on dk_a; attnlab's 1.5e-5)
        model_case(f, "rwkv7_cmix", ["rwkv7", "rwkv7"], "rwkv_cmix", 128, False, dict(chunk_size=16), 8)
        model_case(f, "gla_swiglu_tied", ["gla", "gla"], "swiglu", 96, True, dict(chunk_size=16), 7)


if __name__ == "__main__":
    main()
