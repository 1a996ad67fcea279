"""Golden files for the linear path's ops (tests/test_linpath_probe.c): outputs and
autograd gradients of flash-linear-attention's reference ops (fla/ops/<op>/naive.py),
float32 as fla's naive ops compute, in the layout of /work/shared/golden (inputs/, outputs/, grads/, root
attributes op and options). The shared files linear_attn.h5 (normalize 0, no
initial state) and retention.h5 (no state) are copied as they are; this script
adds the settings they do not cover:

  linear_attn_norm.h5    normalize = 1 with an initial state (S0, z0) and dht, dzt;
                         q, k positive (elu + 1), as the normaliser needs
  linear_attn_h0.h5      normalize = 0 with an initial state, scale 0.3
  retention_h0.h5        RetNet's decays with an initial state and dht, from fla's
                         naive_recurrent_simple_gla with g = log(1 - 2^(-5-h)), which is
                         how fla's chunk_retention computes retention; H = 4, T = 100
  performer.h5           FAVOR+ written here from the paper (unstabilised features
                         exp(W x^ - |x^|^2/2) / sqrt(m), x^ = x K^-1/4) on fla's
                         naive_recurrent_linear_attn(normalize=True, scale=1); inputs
                         q, k, v and projection_matrix [m, K] (no gradient)

Run with /usr/bin/python3 (torch 1.13, h5py) from the source root, with fla's
sources extracted under /tmp/fla (git archive of fla-org/flash-linear-attention):
    /usr/bin/python3 tests/ref/gen_linpath_golden.py /tmp/fla
einops (imported by the naive files, used only by their chunk forms) is shimmed.
The tests never run this script.
"""
import importlib.util
import os
import shutil
import sys
import types

import h5py
import numpy as np
import torch

SHARED = "/work/shared/golden"


def load(fla_root, rel):
    if "einops" not in sys.modules:  # the recurrent references do not use it
        shim = types.ModuleType("einops")
        shim.rearrange = shim.repeat = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("einops shim"))
        sys.modules["einops"] = shim
    spec = importlib.util.spec_from_file_location(rel.replace("/", "_"), os.path.join(fla_root, rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write(path, op, inputs, outputs, grads, attrs):
    with h5py.File(path, "w") as f:
        for grp, d in (("inputs", inputs), ("outputs", outputs), ("grads", grads)):
            for k, v in d.items():
                f[f"{grp}/{k}"] = v.detach().float().numpy()
        f.attrs["op"] = op
        for k, v in attrs.items():
            f.attrs[k] = v
    print(f"{os.path.basename(path)}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in inputs.items()))


def leaf(x):
    return x.float().requires_grad_()


def grads_of(named):
    return {f"d{k}": v.grad for k, v in named.items() if v.requires_grad}


def linear_attn_norm(la, out):
    g = torch.Generator().manual_seed(11)
    B, T, H, K, V = 2, 45, 2, 16, 8
    q = leaf(torch.nn.functional.elu(torch.randn(B, T, H, K, generator=g)) + 1)
    k = leaf(torch.nn.functional.elu(torch.randn(B, T, H, K, generator=g)) + 1)
    v = leaf(torch.randn(B, T, H, V, generator=g))
    S0 = leaf(torch.randn(B, H, K, V, generator=g))
    z0 = leaf(torch.rand(B, 1, H, K, generator=g) * 3)
    o, (S, z) = la.naive_recurrent_linear_attn(q, k, v, initial_state=(S0, z0),
                                              output_final_state=True, normalize=True)
    do, dht, dzt = (torch.randn(x.shape, generator=g).float() for x in (o, S, z))
    ((o * do).sum() + (S * dht).sum() + (z * dzt).sum()).backward()
    ins = dict(q=q, k=k, v=v, initial_state=S0, initial_z=z0)
    write(out, "linear_attn", dict(ins, do=do, dht=dht, dzt=dzt), dict(o=o, final_state=S, final_z=z),
          {"dq": q.grad, "dk": k.grad, "dv": v.grad, "dinitial_state": S0.grad, "dinitial_z": z0.grad},
          dict(normalize=1, scale_default="K^-0.5"))


def linear_attn_h0(la, out):
    g = torch.Generator().manual_seed(12)
    B, T, H, K, V = 2, 70, 3, 8, 16
    q, k, v = (leaf(torch.randn(B, T, H, D, generator=g)) for D in (K, K, V))
    S0 = leaf(torch.randn(B, H, K, V, generator=g))
    o, S = la.naive_recurrent_linear_attn(q, k, v, scale=0.3, initial_state=S0, output_final_state=True)
    do, dht = (torch.randn(x.shape, generator=g).float() for x in (o, S))
    ((o * do).sum() + (S * dht).sum()).backward()
    write(out, "linear_attn", dict(q=q, k=k, v=v, initial_state=S0, do=do, dht=dht), dict(o=o, final_state=S),
          {"dq": q.grad, "dk": k.grad, "dv": v.grad, "dinitial_state": S0.grad}, dict(normalize=0, scale=0.3))


def retention_h0(sg, out):
    g = torch.Generator().manual_seed(13)
    B, T, H, K, V = 2, 100, 4, 16, 8
    q, k, v = (leaf(torch.randn(B, T, H, D, generator=g)) for D in (K, K, V))
    S0 = leaf(torch.randn(B, H, K, V, generator=g))
    gamma = torch.log1p(-torch.pow(2.0, -5.0 - torch.arange(H, dtype=torch.float64))).float()
    gate = gamma.view(1, 1, H).expand(B, T, H)
    o, S = sg.naive_recurrent_simple_gla(q, k, v, gate, initial_state=S0, output_final_state=True)
    do, dht = (torch.randn(x.shape, generator=g).float() for x in (o, S))
    ((o * do).sum() + (S * dht).sum()).backward()
    write(out, "retention", dict(q=q, k=k, v=v, initial_state=S0, do=do, dht=dht), dict(o=o, final_state=S),
          {"dq": q.grad, "dk": k.grad, "dv": v.grad, "dinitial_state": S0.grad},
          dict(decay="gamma_h = 1 - 2^(-5-h)", scale_default="K^-0.5",
               source="fla naive_recurrent_simple_gla with g = log gamma_h (fla's chunk_retention)"))


def performer(la, out):
    g = torch.Generator().manual_seed(14)
    B, T, H, K, V, m = 2, 60, 2, 8, 8, 24
    q, k, v = (leaf(torch.randn(B, T, H, D, generator=g)) for D in (K, K, V))
    W = torch.randn(m, K, generator=g).float()

    def phi(x):
        xh = x * K ** -0.25
        return torch.exp(xh @ W.T - 0.5 * (xh * xh).sum(-1, keepdim=True)) / m ** 0.5

    o, _ = la.naive_recurrent_linear_attn(phi(q), phi(k), v, scale=1.0, normalize=True)
    do = torch.randn(o.shape, generator=g).float()
    (o * do).sum().backward()
    write(out, "performer", dict(q=q, k=k, v=v, projection_matrix=W, do=do), dict(o=o),
          {"dq": q.grad, "dk": k.grad, "dv": v.grad},
          dict(definition="FAVOR+ (Choromanski et al. 2021), causal, normalised; features from the paper"))


def main():
    fla = sys.argv[1] if len(sys.argv) > 1 else "/tmp/fla"
    la = load(fla, "fla/ops/linear_attn/naive.py")
    sg = load(fla, "fla/ops/simple_gla/naive.py")
    gold = os.path.join(os.path.dirname(__file__), "..", "golden")
    for f in ("linear_attn.h5", "retention.h5"):
        shutil.copyfile(os.path.join(SHARED, f), os.path.join(gold, f))
    linear_attn_norm(la, os.path.join(gold, "linear_attn_norm.h5"))
    linear_attn_h0(la, os.path.join(gold, "linear_attn_h0.h5"))
    retention_h0(sg, os.path.join(gold, "retention_h0.h5"))
    performer(la, os.path.join(gold, "performer.h5"))


if __name__ == "__main__":
    main()
