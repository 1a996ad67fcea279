"""The outside references for attnlab's state-space mixers, loaded from the
authors' repositories (never copied into attnlab):

- selective_scan_ref and the Mamba layer (class Mamba) of state-spaces/mamba
  (mamba_ssm/ops/selective_scan_interface.py, mamba_ssm/modules/mamba_simple.py);
- S4DKernel and S4D of state-spaces/s4 (models/s4/s4d.py).

Point MAMBA_DIR / S4_DIR (or --mamba / --s4 of the scripts) at checkouts of
those repositories, e.g. extracted with
    git --git-dir=<mirror> archive HEAD mamba_ssm | tar -x -C /tmp/mamba
The files are executed as they are, with three shims for what this machine
lacks (torch 1.13 CPU, no einops, no triton, no CUDA kernels):
- a small einops (rearrange / repeat for the plain patterns these files use);
- selective_scan_ref is taken out of its file by its syntax tree (the file
  imports triton at the top) and, for float64 references, run with its
  `.float()` casts turned into `.double()` (it computes in float32
  otherwise), a textual change that is printed when made;
- the Mamba layer's `selective_scan_fn` (a CUDA kernel) is bound to
  selective_scan_ref, and `causal_conv1d_fn` is absent, so its forward takes
  its own reference path (nn.Conv1d + SiLU, x_proj, dt_proj, scan).

The S4D layer of attnlab trains B (the paper's S4D has B; the minimal s4d.py
folds it into C): S4DLayer below runs s4d.py's S4DKernel with C replaced by
C * B, which is the same kernel (K is linear in C B), and the block of s4d.py's
S4D with GELU in its tanh form (attnlab's) and no dropout.
"""
import ast
import math
import os
import sys
import types

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- a small einops ------------------------------------------------------------------


def _groups(side):
    out, cur, depth = [], None, 0
    for tok in side.replace("(", " ( ").replace(")", " ) ").split():
        if tok == "(":
            cur, depth = [], 1
        elif tok == ")":
            out.append(cur)
            cur, depth = None, 0
        elif depth:
            cur.append(tok)
        else:
            out.append([] if tok == "1" else [tok])
    return out


def _split(x, pattern, sizes):
    left, right = (_groups(s) for s in pattern.split("->"))
    shape = list(x.shape)
    if ["..."] in left:
        i = left.index(["..."])
        n = len(shape) - (len(left) - 1)
        left = left[:i] + [[f"_e{j}"] for j in range(n)] + left[i + 1:]
        right = sum(([[f"_e{j}"] for j in range(n)] if g == ["..."] else [g] for g in right), [])
    assert len(left) == len(shape), (pattern, shape)
    known = dict(sizes)
    for g, n in zip(left, shape):
        unknown = [a for a in g if a not in known]
        prod = math.prod(known[a] for a in g if a in known)
        if unknown:
            assert len(unknown) == 1, pattern
            known[unknown[0]] = n // prod
    elem = [a for g in left for a in g]
    x = x.reshape([known[a] for a in elem]) if elem else x.reshape([])
    return x, elem, right, known


def rearrange(x, pattern, **sizes):
    x, elem, right, known = _split(x, pattern, sizes)
    order = [a for g in right for a in g]
    x = x.permute([elem.index(a) for a in order])
    return x.reshape([math.prod(known[a] for a in g) for g in right])


def repeat(x, pattern, **sizes):
    x, elem, right, known = _split(x, pattern, sizes)
    order = [a for g in right for a in g]
    kept = [a for a in order if a in elem]
    x = x.permute([elem.index(a) for a in kept])
    view = [known[a] if a in elem else 1 for a in order]
    x = x.reshape(view).expand([known[a] for a in order])
    return x.reshape([math.prod(known[a] for a in g) for g in right])


einops = types.ModuleType("einops")
einops.rearrange, einops.repeat = rearrange, repeat
sys.modules.setdefault("einops", einops)

# ---- mamba_ssm -----------------------------------------------------------------------------


def _root(flag, env):
    for i, a in enumerate(sys.argv):
        if a == flag and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
    if os.environ.get(env):
        return os.environ[env]
    raise SystemExit(f"give the checkout with {flag} DIR or {env}=DIR (see tests/ref/ssm_ref.py)")


def load_selective_scan_ref(double=False):
    path = os.path.join(_root("--mamba", "MAMBA_DIR"), "mamba_ssm", "ops", "selective_scan_interface.py")
    src = open(path).read()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "selective_scan_ref")
    code = ast.get_source_segment(src, fn)
    if double:
        code = code.replace(".float()", ".double()").replace("dtype=dtype_in", "dtype=torch.float64")
        print("ssm_ref: selective_scan_ref with its .float() casts as .double()", file=sys.stderr)
    ns = {"torch": torch, "F": F, "rearrange": rearrange, "repeat": repeat}
    exec(compile(code, path, "exec"), ns)
    return ns["selective_scan_ref"]


def load_mamba(double=False):
    """mamba_simple.Mamba with selective_scan_fn = selective_scan_ref."""
    scan = load_selective_scan_ref(double)
    fake = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    fake.selective_scan_fn, fake.mamba_inner_fn = scan, None
    for name in ("mamba_ssm", "mamba_ssm.ops"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["mamba_ssm.ops.selective_scan_interface"] = fake
    path = os.path.join(_root("--mamba", "MAMBA_DIR"), "mamba_ssm", "modules", "mamba_simple.py")
    mod = types.ModuleType("mamba_simple")
    exec(compile(open(path).read(), path, "exec"), mod.__dict__)
    return mod.Mamba, scan


# attnlab's parameter names for mamba_simple.Mamba's
MAMBA_NAMES = {"in_proj.weight": "in_proj", "conv1d.weight": "conv", "conv1d.bias": "conv_bias",
               "x_proj.weight": "x_proj", "dt_proj.weight": "dt_proj", "dt_proj.bias": "dt_bias",
               "A_log": "A_log", "D": "D", "out_proj.weight": "out_proj"}


def mamba_layer(d_model, d_state=16, expand=2, d_conv=4, dt_rank="auto", double=False):
    Mamba, _ = load_mamba(double)
    m = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank, use_fast_path=False)
    return m.double() if double else m


def mamba_params(m):
    """mamba_simple.Mamba's parameters under attnlab's names."""
    return {MAMBA_NAMES[k]: p for k, p in m.named_parameters()}


def mamba_view(attnlab_name, t):
    """A parameter (or its gradient) in attnlab's shape (conv [I, 1, K] as [I, K])."""
    return t[:, 0, :] if attnlab_name == "conv" else t


# ---- state-spaces/s4 ------------------------------------------------------------------------


def load_s4d():
    path = os.path.join(_root("--s4", "S4_DIR"), "models", "s4", "s4d.py")
    nn_mod = types.ModuleType("src.models.nn")
    nn_mod.DropoutNd = nn.Dropout  # only used with dropout > 0, which we do not
    for name in ("src", "src.models"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["src.models.nn"] = nn_mod
    mod = types.ModuleType("s4d")
    exec(compile(open(path).read(), path, "exec"), mod.__dict__)
    return mod


class S4DLayer(nn.Module):
    """s4d.py's S4D block (SSM convolution by FFT, D skip, GELU, Conv1d(k=1)
    to 2H, GLU) over [B, T, H], with a trained B folded into s4d.py's C; the
    parameters under attnlab's names."""

    def __init__(self, d_model, d_state=64, dt_min=1e-3, dt_max=1e-1):
        super().__init__()
        s4d = load_s4d()
        H, M = d_model, d_state // 2
        self.kernel = s4d.S4DKernel(d_model, N=d_state, dt_min=dt_min, dt_max=dt_max)
        self.log_dt, self.log_A_real, self.A_imag = self.kernel.log_dt, self.kernel.log_A_real, self.kernel.A_imag
        self.C = self.kernel.C
        self.B = nn.Parameter(torch.view_as_real(torch.ones(H, M, dtype=torch.cfloat)).clone())
        self.D = nn.Parameter(torch.randn(H))
        self.out = nn.Conv1d(H, 2 * H, kernel_size=1)
        del self.kernel._parameters["C"]  # C is given per call (C * B)

    def ssm_kernel(self, L):
        self.kernel.C = torch.view_as_real(torch.view_as_complex(self.C) * torch.view_as_complex(self.B))
        return self.kernel(L=L)

    def forward(self, x):  # [B, T, H]
        u = x.transpose(-1, -2)
        L = u.size(-1)
        k = self.ssm_kernel(L)
        y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]
        y = F.gelu(y + u * self.D.unsqueeze(-1), approximate="tanh")
        y = F.glu(self.out(y), dim=-2)
        return y.transpose(-1, -2)

    def attnlab_params(self):
        return {"log_dt": self.log_dt, "log_A_real": self.log_A_real, "A_imag": self.A_imag, "B": self.B,
                "C": self.C, "D": self.D, "out_proj": self.out.weight, "out_bias": self.out.bias}

    @staticmethod
    def attnlab_view(name, t):
        return t[:, :, 0] if name == "out_proj" else t
