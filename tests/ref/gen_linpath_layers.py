"""Reference values for tests/test_linpath_layers.c: whole linear-path mixer
layers (linear_attn, performer, retnet) computed by the independent PyTorch
implementation in bench/torch_linpath.py (written from the papers and
flash-linear-attention's layer definitions) with fla's naive reference ops as
the core (naive_recurrent_linear_attn, naive_retention), in float64 from
float32-representable weights and inputs, stored as float32, at training
shapes (B = 16, ragged T).

Run with /usr/bin/python3 (torch 1.13, h5py) from the source root, with fla's
sources extracted under /tmp/fla (see tests/ref/gen_linpath_golden.py):
    /usr/bin/python3 tests/ref/gen_linpath_layers.py /tmp/fla
It writes tests/golden/linpath_layers.h5. The tests never run this script.

Per case (group /<case>): attributes mixer, d_model, n_heads, and opt.<key>
= value for each mixer option that differs from its default (enum options
by their index in the option table: linear_attn feature_map elu 0 relu 1
identity 2, output_norm none 0 rmsnorm 1; retnet mode chunk 0 parallel 1,
norm groupnorm 0 rmsnorm 1, output_gate swish 0 none 1); datasets
params/<name> (attnlab's names and shapes), x [B,T,d], dy, y, dx,
grads/<name>; performer also omega [m, K] (the pinned features).
"""
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import gen_linpath_golden as gg  # noqa: E402
import torch_linpath as tl  # noqa: E402

D, H, B = 32, 2, 16
HD = D // H
CASES = [  # name, mixer, T, constructor options, attnlab options
    ("linear_attn", "linear_attn", 45, {}, {}),
    ("linear_attn_relu_rmsnorm", "linear_attn", 37, dict(feature_map="relu", output_norm="rmsnorm"),
     {"feature_map": 1, "output_norm": 1, "chunk_size": 16}),
    ("linear_attn_identity_plain", "linear_attn", 29, dict(feature_map="identity", normalize=False, output_norm="rmsnorm"),
     {"feature_map": 2, "normalize": 0, "output_norm": 1, "chunk_size": 8}),
    ("performer", "performer", 45, dict(num_features=24), {"num_features": 24, "chunk_size": 16}),
    ("retnet", "retnet", 45, {}, {}),
    ("retnet_rmsnorm_nogate_parallel", "retnet", 38, dict(norm="rmsnorm", gate="none"),
     {"norm": 1, "output_gate": 1, "mode": 1}),
]


def build(mixer, o):
    if mixer == "linear_attn":
        return tl.LinearAttention(D, H, HD, core="fla", **o)
    if mixer == "performer":
        return tl.Performer(D, H, HD, core="fla", **o)
    return tl.RetNet(D, H, HD, core="fla", **o)


def main():
    fla = sys.argv[1] if len(sys.argv) > 1 else "/tmp/fla"
    tl.set_fla(gg.load(fla, "fla/ops/linear_attn/naive.py"), gg.load(fla, "fla/ops/retention/naive.py"))
    torch.set_default_dtype(torch.float64)
    out = os.path.join(os.path.dirname(__file__), "..", "golden", "linpath_layers.h5")
    f32 = lambda t: t.detach().float().numpy()  # noqa: E731
    with h5py.File(out, "w") as f:
        for ci, (name, mixer, T, o, opts) in enumerate(CASES):
            torch.manual_seed(200 + ci)
            m = build(mixer, o)
            with torch.no_grad():  # weights large enough that every path matters
                for key, p in m.named_parameters():
                    if "norm" in key and not key.endswith("bias"):
                        p.copy_(1 + 0.2 * torch.randn_like(p))
                    elif key.endswith("bias"):
                        p.copy_(0.2 * torch.randn_like(p))
                    else:
                        p.copy_((0.25 if mixer == "performer" else 0.4) * torch.randn_like(p))
                    p.copy_(p.float().double())
                if mixer == "performer":
                    m.omega = m.omega.float().double()
                    m.pinned = True
            x = torch.randn(B, T, D).float().double().requires_grad_()
            y = m(x)
            dy = torch.randn_like(y).float().double()
            y.backward(dy)
            grp = f.create_group(name)
            grp.attrs["mixer"], grp.attrs["d_model"], grp.attrs["n_heads"] = np.bytes_(mixer), D, H
            for k, v in opts.items():
                grp.attrs[f"opt.{k}"] = float(v)
            for key, p in tl.attnlab_names(m):
                grp[f"params/{key}"] = f32(p)
                grp[f"grads/{key}"] = f32(p.grad)
            if mixer == "performer":
                grp["omega"] = f32(m.omega)
            grp["x"], grp["dy"], grp["y"], grp["dx"] = f32(x), f32(dy), f32(y), f32(x.grad)
            print(f"{name}: T {T}, {sum(p.numel() for p in m.parameters())} params, |y| {y.norm():.3f}")


if __name__ == "__main__":
    main()
