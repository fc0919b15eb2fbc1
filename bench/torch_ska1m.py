#!/usr/bin/env python3
"""PyTorch CPU eager baseline for one training step of the `ska-1m` preset.

A port of models/ (docs/models.md) with the same shapes, the same FLOPs and the
same parameter count (735,756), written with plain tensor ops and differentiated
by autograd:

    x = E[tokens]
    per layer (pattern MMSS):  x += mixer(rmsnorm(x));  x += swiglu(rmsnorm(x))
    logits = rmsnorm(x) Eᵀ (tied);  loss = cross_entropy(logits, targets, ignore -100)

- Mamba-2 mixer: in_proj → depthwise causal conv1d (+bias, width 4) → SiLU →
  split x/B/C; dt = softplus(dt_raw + dt_bias), A = −exp(A_log); the scan is
  the chunked SSD of bench/torch_ssd_scan.py (chunk 64, the same algorithm as
  ops/ssd_scan.cpp); gated RMSNorm rmsnorm(y·silu(z))·w; out_proj.
- SKA mixer: k̂ = l2norm(x w_kᵀ), q̂ = l2norm(x w_qᵀ), v = x w_vᵀ, γ = 0.5 + σ(γ_raw),
  the closed-form chunk-mode Koopman readout of bench/torch_koopman_fit.py
  (torch.linalg.cholesky_ex / solve_triangular, power-iteration α detached, the
  polynomial filter with coef [H, K+1]), times η, then w_o.
- SwiGLU MLP, RMSNorm, tied embedding; the loss is the mean over scored targets.
- The step: zero_grad, forward, loss.backward(), the global gradient norm
  (clip 1.0), torch.optim.AdamW (β = 0.9, 0.95, weight decay 0.1 on the
  weights that our trainer decays) — what `echo-lm train` does per step.

What differs from our model (none of it changes the work per step):
- Initialisation is simplified (scaled Gaussians; w_o is not zero, so the SKA
  branch carries gradient as it does after the first step), and the weights
  are not loaded from a checkpoint.
- The batch is random tokens with the shape of the task's batch; `--scored`
  of the positions have a target (the MQAR task scores M of its 3M+gap).
- Our trainer also checks the loss and the gradients for NaN/Inf and writes a
  metrics line per step; that is O(parameters) and left out here.

Prints one JSON line: the median (and best) step time and tokens/s over
`--steps` timed steps after `--warmup` steps.

    /usr/bin/python3 bench/torch_ska1m.py --threads 2 --batch 32 --T 76
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_koopman_fit import koopman_fit  # noqa: E402
from torch_ssd_scan import ssd_chunked  # noqa: E402

# ska-1m (configs/ska-1m.json)
CFG = dict(vocab=128, d=128, pattern="MMSS", d_ff=256, eps=1e-5,
           d_state=16, expand=2, headdim=32, ngroups=1, d_conv=4, ssd_chunk=64,
           ska_heads=4, rank=24, head_dim_v=32, ska_chunk=64, ridge=1e-3, power_steps=2, power_iters=6)


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def l2norm(x, eps=1e-6):
    return x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def param(*shape, std):
    return torch.nn.Parameter(torch.randn(*shape) * std)


class Mamba(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d"]
        self.d_inner = c["expand"] * d
        self.H, self.P, self.G, self.N = self.d_inner // c["headdim"], c["headdim"], c["ngroups"], c["d_state"]
        self.conv_dim = self.d_inner + 2 * self.G * self.N
        self.W, self.chunk, self.eps = c["d_conv"], c["ssd_chunk"], c["eps"]
        self.in_proj = param(2 * self.d_inner + 2 * self.G * self.N + self.H, d, std=d ** -0.5)
        self.conv_w = param(self.conv_dim, self.W, std=0.5)
        self.conv_b = param(self.conv_dim, std=0.5)
        dt = torch.exp(torch.empty(self.H).uniform_(math.log(1e-3), math.log(1e-1)))
        self.dt_bias = torch.nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = torch.nn.Parameter(torch.log(torch.empty(self.H).uniform_(1, 16)))
        self.D = torch.nn.Parameter(torch.ones(self.H))
        self.norm_w = torch.nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = param(d, self.d_inner, std=self.d_inner ** -0.5 / 2)

    def forward(self, x):
        b, T, _ = x.shape
        zxbcdt = x @ self.in_proj.t()
        z, xBC, dt_raw = torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.H], dim=-1)
        # depthwise causal conv over time: [b, C, T] with left padding W-1
        xBC = F.conv1d(F.pad(xBC.transpose(1, 2), (self.W - 1, 0)), self.conv_w[:, None, :], self.conv_b,
                       groups=self.conv_dim).transpose(1, 2)
        xBC = F.silu(xBC)
        xs, B, C = torch.split(xBC, [self.d_inner, self.G * self.N, self.G * self.N], dim=-1)
        dt = F.softplus(dt_raw + self.dt_bias)
        A = -torch.exp(self.A_log)
        y, _ = ssd_chunked(xs.reshape(b, T, self.H, self.P), dt, A, B.reshape(b, T, self.G, self.N),
                           C.reshape(b, T, self.G, self.N), self.D, self.chunk)
        y = rmsnorm(y.reshape(b, T, self.d_inner) * F.silu(z), self.norm_w, self.eps)
        return y @ self.out_proj.t()


class Ska(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d"]
        self.H, self.r, self.P = c["ska_heads"], c["rank"], c["head_dim_v"]
        self.opts = dict(chunk_size=c["ska_chunk"], ridge=c["ridge"], power_steps=c["power_steps"],
                         power_iters=c["power_iters"])
        self.w_k = param(self.H * self.r, d, std=d ** -0.5)
        self.w_q = param(self.H * self.r, d, std=d ** -0.5)
        self.w_v = param(self.H * self.P, d, std=d ** -0.5)
        self.w_o = param(d, self.H * self.P, std=0.02)
        self.gamma_raw = torch.nn.Parameter(torch.tensor([math.log(0.2 / 0.8)]))
        self.eta = torch.nn.Parameter(torch.tensor([1.5]))
        self.filter_coef = torch.nn.Parameter(torch.full((self.H, c["power_steps"] + 1), 1.0 / (c["power_steps"] + 1)))

    def forward(self, x):
        b, T, _ = x.shape
        k = l2norm((x @ self.w_k.t()).reshape(b, T, self.H, self.r))
        q = l2norm((x @ self.w_q.t()).reshape(b, T, self.H, self.r))
        v = (x @ self.w_v.t()).reshape(b, T, self.H, self.P)
        gamma = 0.5 + torch.sigmoid(self.gamma_raw)
        y = koopman_fit(k, q, v, gamma, coef=self.filter_coef, **self.opts) * self.eta
        return y.reshape(b, T, self.H * self.P) @ self.w_o.t()


class SwiGlu(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        d, f = c["d"], c["d_ff"]
        self.gate, self.up, self.down = param(f, d, std=d ** -0.5), param(f, d, std=d ** -0.5), param(d, f, std=f ** -0.5)

    def forward(self, x):
        return (F.silu(x @ self.gate.t()) * (x @ self.up.t())) @ self.down.t()


class Block(torch.nn.Module):
    def __init__(self, c, letter):
        super().__init__()
        self.norm1 = torch.nn.Parameter(torch.ones(c["d"]))
        self.mixer = Mamba(c) if letter == "M" else Ska(c)
        self.norm2 = torch.nn.Parameter(torch.ones(c["d"]))
        self.mlp = SwiGlu(c)
        self.eps = c["eps"]

    def forward(self, x):
        x = x + self.mixer(rmsnorm(x, self.norm1, self.eps))
        return x + self.mlp(rmsnorm(x, self.norm2, self.eps))


class LM(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embedding = param(c["vocab"], c["d"], std=0.02)
        self.layers = torch.nn.ModuleList([Block(c, l) for l in c["pattern"]])
        self.norm_f = torch.nn.Parameter(torch.ones(c["d"]))
        self.eps = c["eps"]

    def forward(self, tokens):
        x = F.embedding(tokens, self.embedding)
        for blk in self.layers:
            x = blk(x)
        return rmsnorm(x, self.norm_f, self.eps) @ self.embedding.t()


def decays(name):
    """The weights our trainer decays (models/params.cpp no_weight_decay)."""
    keep = ("gamma_raw", "eta", "filter_coef", "A_log", ".D", "dt_bias", "norm", "embedding", "conv_b")
    return not any(k in name for k in keep)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--T", type=int, default=76)
    ap.add_argument("--scored", type=float, default=4 / 76, help="fraction of positions with a target")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    model = LM(CFG)
    n_params = sum(p.numel() for p in model.parameters())
    named = list(model.named_parameters())
    opt = torch.optim.AdamW([{"params": [p for n, p in named if decays(n)], "weight_decay": 0.1},
                             {"params": [p for n, p in named if not decays(n)], "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    tokens = torch.randint(0, CFG["vocab"], (a.batch, a.T))
    targets = torch.randint(0, CFG["vocab"], (a.batch, a.T))
    targets[torch.rand(a.batch, a.T) >= a.scored] = -100

    def step():
        opt.zero_grad(set_to_none=False)
        logits = model(tokens)
        loss = F.cross_entropy(logits.reshape(-1, CFG["vocab"]), targets.reshape(-1), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med, best, mean = statistics.median(times), min(times), statistics.fmean(times)
    print(json.dumps({"bench": "torch_ska1m", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "params": n_params, "batch": a.batch, "T": a.T, "steps": a.steps,
                      "step_ms": med * 1e3, "step_best_ms": best * 1e3, "step_mean_ms": mean * 1e3,
                      "step_max_ms": max(times) * 1e3, "step_s_each": times,
                      "tokens_per_s": a.batch * a.T / med, "tokens_per_s_best": a.batch * a.T / best,
                      "tokens_per_s_mean": a.batch * a.T / mean}))


if __name__ == "__main__":
    main()
