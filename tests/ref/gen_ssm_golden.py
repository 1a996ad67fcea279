"""Golden files of attnlab's state-space ops and layers from the authors'
PyTorch code (tests/ref/ssm_ref.py loads it from checkouts of
state-spaces/mamba and state-spaces/s4):

  tests/golden/selective_scan.h5        selective_scan_ref: delta_softplus, delta_bias, D, z, last state
  tests/golden/selective_scan_plain.h5  selective_scan_ref without any option (no softplus, D, z, bias)
  tests/golden/s4d_kernel.h5            S4DKernel (with C * B as its C)
  tests/golden/ssm_layers.h5            mamba_simple.Mamba (its reference path, with selective_scan_ref)
                                        and the S4D block of s4d.py, at a training shape (B 16, T 37)

The op files follow the layout of /work/shared/golden (inputs/, outputs/,
grads/, root attributes: options and the sources' commits), computed in
float32 as the references compute, autograd gradients of
sum(out * dout) [+ sum(last_state * dlast_state)]. The layer file is computed
in float64 (selective_scan_ref's float32 casts made double, see ssm_ref.py)
from float32-representable values: per case params/<attnlab name>, x, dy, y,
dx, grads/<attnlab name>.

    /usr/bin/python3 tests/ref/gen_ssm_golden.py --mamba /tmp/mamba --s4 /tmp/s4 \
        [--mamba-commit SHA] [--s4-commit SHA]

The tests never run this script.
"""
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import ssm_ref  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def arg(flag, default=""):
    return sys.argv[sys.argv.index(flag) + 1] if flag in sys.argv else default


def f32(t):
    return t.detach().float().numpy()


def write_op(name, inputs, outputs, grads, attrs):
    with h5py.File(os.path.join(ROOT, "tests", "golden", name), "w") as f:
        for k, v in inputs.items():
            f[f"inputs/{k}"] = f32(v)
        for k, v in outputs.items():
            f[f"outputs/{k}"] = f32(v)
        for k, v in grads.items():
            f[f"grads/{k}"] = f32(v)
        for k, v in attrs.items():
            f.attrs[k] = v
    print(name, {k: tuple(v.shape) for k, v in outputs.items()})


def scan_case(name, full):
    scan = ssm_ref.load_selective_scan_ref()
    g = torch.Generator().manual_seed(7 if full else 8)
    Bn, D, L, N = 2, 5, 37, 4
    leaf = lambda *s, scale=1.0, shift=0.0: (torch.randn(*s, generator=g) * scale + shift).requires_grad_()  # noqa: E731
    x = {"u": leaf(Bn, D, L), "delta": leaf(Bn, D, L, scale=0.5, shift=0.0 if full else 1.0)}
    if not full:  # no softplus: dt = delta itself must be positive
        x["delta"] = (torch.rand(Bn, D, L, generator=g) * 0.5 + 0.02).requires_grad_()
    x["A"] = (-torch.exp(torch.randn(D, N, generator=g) * 0.3) * torch.arange(1, N + 1)).detach().requires_grad_()
    x["B"], x["C"] = leaf(Bn, N, L), leaf(Bn, N, L)
    if full:
        x["D"], x["z"], x["delta_bias"] = leaf(D), leaf(Bn, D, L), leaf(D, scale=0.3)
    out, last = scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x.get("D"), z=x.get("z"),
                     delta_bias=x.get("delta_bias"), delta_softplus=full, return_last_state=True)
    dout, dlast = torch.randn(out.shape, generator=g), torch.randn(last.shape, generator=g)
    ((out * dout).sum() + (last * dlast).sum()).backward()
    inputs = dict(x, dout=dout, dlast_state=dlast)
    write_op(name, inputs, {"out": out, "last_state": last}, {f"d{k}": v.grad for k, v in x.items()},
             {"op": "selective_scan", "delta_softplus": int(full), "chunk_size": 8,
              "source": f"state-spaces/mamba {arg('--mamba-commit')} selective_scan_ref"})


def kernel_case():
    s4d = ssm_ref.load_s4d()
    torch.manual_seed(9)
    H, N, L = 3, 8, 37
    k = s4d.S4DKernel(H, N=N)
    with torch.no_grad():  # away from the initialisation, so every path matters
        k.log_A_real.add_(0.3 * torch.randn_like(k.log_A_real))
        k.A_imag.add_(0.3 * torch.randn_like(k.A_imag))
        k.log_dt.copy_(torch.empty(H).uniform_(np.log(1e-2), np.log(0.5)))
    B = torch.view_as_real(torch.complex(1 + 0.3 * torch.randn(H, N // 2), 0.3 * torch.randn(H, N // 2)))
    B = B.clone().requires_grad_()
    C = k.C
    del k._parameters["C"]
    k.C = torch.view_as_real(torch.view_as_complex(C) * torch.view_as_complex(B))
    K = k(L=L)
    dK = torch.randn(K.shape)
    (K * dK).sum().backward()
    x = {"log_dt": k.log_dt, "log_A_real": k.log_A_real, "A_imag": k.A_imag, "B": B, "C": C}
    write_op("s4d_kernel.h5", dict(x, dK=dK), {"K": K}, {f"d{n}": v.grad for n, v in x.items()},
             {"op": "s4d_kernel", "L": L, "source": f"state-spaces/s4 {arg('--s4-commit')} models/s4/s4d.py S4DKernel"})


def exact32(p):
    with torch.no_grad():
        p.copy_(p.float().double())


def layer_cases():
    torch.set_default_dtype(torch.float64)
    Bn, T, d = 16, 37, 16
    out = os.path.join(ROOT, "tests", "golden", "ssm_layers.h5")
    with h5py.File(out, "w") as f:
        # Mamba: d_state 8, expand 2, conv 4, dt_rank ceil(16/16) = 1
        torch.manual_seed(11)
        m = ssm_ref.mamba_layer(d, d_state=8, expand=2, d_conv=4, double=True)
        with torch.no_grad():
            for key, p in m.named_parameters():
                if key in ("A_log", "dt_proj.bias"):
                    p.add_(0.3 * torch.randn_like(p))
                elif key == "D":
                    p.copy_(1 + 0.2 * torch.randn_like(p))
                else:
                    p.copy_(0.4 * torch.randn_like(p))
                exact32(p)
        layer_case(f, "mamba", m, ssm_ref.mamba_params(m), ssm_ref.mamba_view, Bn, T, d,
                   {"d_state": 8, "expand": 2, "conv_size": 4, "dt_rank": 1, "chunk_size": 8})
        # S4D: d_state 8 (4 modes)
        torch.manual_seed(12)
        s = ssm_ref.S4DLayer(d, d_state=8)
        with torch.no_grad():
            s.log_A_real.add_(0.3 * torch.randn_like(s.log_A_real))
            s.A_imag.add_(0.3 * torch.randn_like(s.A_imag))
            s.B.add_(0.3 * torch.randn_like(s.B))
            s.log_dt.copy_(torch.empty(d).uniform_(np.log(1e-2), np.log(0.5)))
            s.out.weight.copy_(0.4 * torch.randn_like(s.out.weight))
            s.out.bias.copy_(0.2 * torch.randn_like(s.out.bias))
            for p in s.parameters():
                exact32(p)
        layer_case(f, "s4d", s, s.attnlab_params(), ssm_ref.S4DLayer.attnlab_view, Bn, T, d, {"d_state": 8})


def layer_case(f, name, m, params, view, Bn, T, d, opts):
    x = torch.randn(Bn, T, d).float().double().requires_grad_()
    y = m(x)
    dy = torch.randn_like(y).float().double()
    y.backward(dy)
    grp = f.create_group(name)
    grp.attrs["mixer"], grp.attrs["d_model"] = np.bytes_(name), d
    for k, v in opts.items():
        grp.attrs[k] = v
    for n, p in params.items():
        grp[f"params/{n}"] = f32(view(n, p))
        grp[f"grads/{n}"] = f32(view(n, p.grad))
    grp["x"], grp["dy"], grp["y"], grp["dx"] = f32(x), f32(dy), f32(y), f32(x.grad)
    print(f"{name}: {sum(p.numel() for p in m.parameters())} params, |y| {y.norm():.3f}")


def main():
    scan_case("selective_scan.h5", True)
    scan_case("selective_scan_plain.h5", False)
    kernel_case()
    layer_cases()


if __name__ == "__main__":
    main()
