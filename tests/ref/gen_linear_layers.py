"""Reference values for tests/test_linear_layers_golden.c: whole linear-mixer
layers (kda, gdn, deltanet, mamba2) computed by the independent PyTorch
implementation in bench/torch_lm.py (written from the Kimi Linear paper and
flash-linear-attention's layer definitions; its chunkwise rule is checked
against the token recurrence below), in float64 from float32-representable
weights and inputs, stored as float32.

Run with /usr/bin/python3 (torch 1.13, h5py) from the source root:
    /usr/bin/python3 tests/ref/gen_linear_layers.py
It writes tests/golden/linear_layers.h5. The tests never run this script.

Per case (group /<case>): attributes mixer, d_model, n_heads, head_dim,
expand_v, chunk, conv (0: no short conv), gate (sigmoid | swish | none),
bounded (0/1), lower_bound, neg_eig, d_state, expand; datasets params/<name>
(attnlab's parameter names and shapes), x [B,T,d], dy (the output gradient
seeded), y, grads/<name> and dx.
"""
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import torch_lm as tl  # noqa: E402

torch.set_default_dtype(torch.float64)

CASES = [
    # name, mixer, options
    ("kda", "kda", dict(conv=4, gate="sigmoid")),
    ("kda_bounded_swish_noconv_neg", "kda", dict(conv=0, gate="swish", lower_bound=-4.0, neg_eig=True)),
    ("gdn", "gdn", dict(conv=4, gate="swish")),
    ("gdn_bounded_sigmoid", "gdn", dict(conv=3, gate="sigmoid", lower_bound=-2.0)),
    ("deltanet", "deltanet", dict(conv=4, gate="none")),
    ("mamba2", "mamba2", dict(conv=4, gate="swish")),
    ("mamba2_noconv_nogate", "mamba2", dict(conv=0, gate="none")),
]
D, H, HD, T, B, CHUNK = 16, 2, 8, 21, 2, 8


def recurrent(q, k, v, g, beta, scale):
    Bn, Tn, Hn, K = q.shape
    S = q.new_zeros(Bn, Hn, K, v.shape[-1])
    outs = []
    for t in range(Tn):
        S = S * g[:, t].exp()[..., None]
        u = v[:, t] if beta is None else beta[:, t][..., None] * (v[:, t] - torch.einsum("bhk,bhkv->bhv", k[:, t], S))
        S = S + k[:, t][..., None] * u[..., None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    return torch.stack(outs, 1)


def check_chunk_rule():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 19, 2, 6, generator=g)
    k = torch.nn.functional.normalize(torch.randn(2, 19, 2, 6, generator=g), dim=-1)
    v = torch.randn(2, 19, 2, 5, generator=g)
    gate = -torch.rand(2, 19, 2, 6, generator=g) * 3
    beta = torch.rand(2, 19, 2, generator=g)
    for b in (beta, None):
        err = (tl.chunk_delta(q, k, v, gate, b, 4) - recurrent(q, k, v, gate, b, 6 ** -0.5)).abs().max()
        assert err < 1e-12, err


def attnlab_name(key):
    if key == "g_proj.up.bias":
        return "g_proj.bias"
    return key[: -len(".weight")] if key.endswith(".weight") else key


def build(mixer, o):
    if mixer == "mamba2":
        return tl.Mamba2Mixer(D, HD, d_state=8, expand=2, conv=o["conv"], chunk=CHUNK, gate=o["gate"])
    return tl.DeltaMixer(mixer, D, H, HD, 2 if mixer == "gdn" else 1, conv=o["conv"], chunk=CHUNK,
                         gate=o["gate"], lower_bound=o.get("lower_bound"), neg_eig=o.get("neg_eig", False))


def main():
    check_chunk_rule()
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    out = os.path.join(root, "tests", "golden", "linear_layers.h5")
    with h5py.File(out, "w") as f:
        for ci, (name, mixer, o) in enumerate(CASES):
            torch.manual_seed(100 + ci)
            m = build(mixer, o)
            with torch.no_grad():  # weights large enough that every path matters
                for key, p in m.named_parameters():
                    if key in ("A_log", "dt_bias"):
                        p.add_(0.3 * torch.randn_like(p))
                    elif key in ("o_norm", "norm", "D"):
                        p.copy_(1 + 0.2 * torch.randn_like(p))
                    else:
                        p.copy_(0.4 * torch.randn_like(p))
                    p.copy_(p.float().double())  # stored as float32: compute from exactly those
            x = torch.randn(B, T, D).float().double().requires_grad_()
            y = m(x)
            dy = torch.randn_like(y).float().double()
            y.backward(dy)
            grp = f.create_group(name)
            a = grp.attrs
            a["mixer"], a["d_model"], a["n_heads"], a["head_dim"] = np.bytes_(mixer), D, H, HD
            a["expand_v"] = 2 if mixer == "gdn" else 1
            a["chunk"], a["conv"], a["gate"] = CHUNK, o["conv"], np.bytes_(o["gate"])
            a["bounded"] = int(o.get("lower_bound") is not None)
            a["lower_bound"] = o.get("lower_bound") or -5.0
            a["neg_eig"] = int(o.get("neg_eig", False))
            a["d_state"], a["expand"] = 8, 2
            f32 = lambda t: t.detach().float().numpy()  # noqa: E731
            for key, p in m.named_parameters():
                grp[f"params/{attnlab_name(key)}"] = f32(p)
                grp[f"grads/{attnlab_name(key)}"] = f32(p.grad)
            grp["x"], grp["dy"], grp["y"], grp["dx"] = f32(x), f32(dy), f32(y), f32(x.grad)
            print(f"{name}: {sum(p.numel() for p in m.parameters())} params, |y| {y.norm():.3f}")


if __name__ == "__main__":
    main()
