"""Reference values for tests/golden/dplr.h5: flash-linear-attention's
reference op of the generalised delta rule (diagonal plus low rank, the core
of RWKV-7), `dplr_recurrence` in fla/ops/generalized_delta_rule/dplr/naive.py,
run in float32 with PyTorch autograd for the gradients. The layout is that of
the shared golden files (/work/shared/golden/README.md):

    inputs/{q,k,v,a,b,gk,initial_state,do,dht}   [B,T,H,*] (fla's op layout)
    outputs/{o,final_state}
    grads/d{q,k,v,a,b,gk,initial_state}          of sum(o do) + sum(final_state dht)
    attributes: op = dplr, scale_default = K^-0.5

fla's naive file takes head-first tensors [B,H,T,D] and names a, b `alpha`,
`beta`; it is imported from a checkout of fla (no triton needed):

    git --git-dir=<mirror of fla-org/flash-linear-attention> show \
        HEAD:fla/ops/generalized_delta_rule/dplr/naive.py > /tmp/fla_dplr/naive.py
    /usr/bin/python3 tests/ref/gen_dplr_golden.py /tmp/fla_dplr/naive.py

(fla commit bc3b101 was used.) The naive file imports einops for its chunked
variant only; a stub stands in when einops is not installed. The inputs are
RWKV-7-like: a = -kappa with kappa a unit row, b = kappa * alpha with alpha in
(0, 1), gk = logsigmoid(N(0, 1)) (decays down to about e^-3 per token).
The tests never run this script.
"""
import importlib.util
import os
import sys
import types

import h5py
import numpy as np
import torch

B, T, H, K, V = 2, 37, 2, 16, 8


def load_naive(path):
    if "einops" not in sys.modules:
        try:
            import einops  # noqa: F401
        except ImportError:  # only dplr_chunkwise uses it
            stub = types.ModuleType("einops")
            stub.rearrange = lambda *a, **k: (_ for _ in ()).throw(NotImplementedError("einops"))
            sys.modules["einops"] = stub
    spec = importlib.util.spec_from_file_location("fla_dplr_naive", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    naive = load_naive(sys.argv[1] if len(sys.argv) > 1 else "/tmp/fla_dplr/naive.py")
    torch.manual_seed(7)
    q = torch.randn(B, T, H, K)
    k = torch.randn(B, T, H, K) / K ** 0.5
    v = torch.randn(B, T, H, V)
    kappa = torch.nn.functional.normalize(torch.randn(B, T, H, K), dim=-1)
    alpha = torch.rand(B, T, H, K)
    a, b = -kappa, kappa * alpha
    gk = torch.nn.functional.logsigmoid(torch.randn(B, T, H, K))
    h0 = torch.randn(B, H, K, V)
    do, dht = torch.randn(B, T, H, V), torch.randn(B, H, K, V)
    inputs = dict(q=q, k=k, v=v, a=a, b=b, gk=gk, initial_state=h0)
    leaves = {n: x.clone().requires_grad_() for n, x in inputs.items()}
    hf = lambda x: x.transpose(1, 2)  # noqa: E731  [B,T,H,D] -> [B,H,T,D]
    o, ht = naive.dplr_recurrence(hf(leaves["q"]), hf(leaves["k"]), hf(leaves["v"]), hf(leaves["a"]),
                                  hf(leaves["b"]), hf(leaves["gk"]), initial_state=leaves["initial_state"],
                                  output_final_state=True)
    o = o.transpose(1, 2)
    ((o * do).sum() + (ht * dht).sum()).backward()
    out = os.path.join(os.path.dirname(__file__), "..", "golden", "dplr.h5")
    with h5py.File(out, "w") as f:
        f.attrs["op"] = "dplr"
        f.attrs["scale_default"] = "K^-0.5"
        f32 = lambda x: x.detach().float().numpy()  # noqa: E731
        for n, x in inputs.items():
            f[f"inputs/{n}"] = f32(x)
            f[f"grads/d{n}"] = f32(leaves[n].grad)
        f["inputs/do"], f["inputs/dht"] = f32(do), f32(dht)
        f["outputs/o"], f["outputs/final_state"] = f32(o), f32(ht)
    print(f"wrote {out}: |o| {o.norm():.4f}, |ht| {ht.norm():.4f}")


if __name__ == "__main__":
    main()
