#!/usr/bin/env python3
"""PyTorch CPU eager baseline for one training step of a small Echo preset.

`--model` picks one of the three presets of d = 128, 4 layers and SwiGLU MLPs
(docs/models.md, "Presets"); the sizes are read from configs/<model>.json, the
same text Echo embeds:

    model     pattern  mixers                                    parameters
    ska-1m    MMSS     2 Mamba-2, 2 Spectral Koopman Attention      735,756
    ssm-1m    MMMM     4 Mamba-2                                    831,328
    attn-1m   MMAA     2 Mamba-2, 2 causal softmax attention        752,112

Each is a port of models/ with the same parameter tensors (shapes and count),
the same FLOPs (but for the attention scores, see below) and the same step, written with plain tensor ops and
differentiated by autograd. At start-up the parameter count is checked against
Echo's count for the preset, and the run stops with a message if they differ.

    x = E[tokens]
    per layer (the pattern):  x += mixer(rmsnorm(x));  x += swiglu(rmsnorm(x))
    logits = rmsnorm(x) Eᵀ (tied);  loss = cross_entropy(logits, targets, ignore -100)

- Mamba-2 mixer (`M`): in_proj → depthwise causal conv1d (+bias, width 4) → SiLU →
  split x/B/C; dt = softplus(dt_raw + dt_bias), A = −exp(A_log); the scan is
  the chunked SSD of bench/torch_ssd_scan.py (chunk 64, the same algorithm as
  ops/ssd_scan.cpp); gated RMSNorm rmsnorm(y·silu(z))·w; out_proj.
- SKA mixer (`S`): k̂ = l2norm(x w_kᵀ), q̂ = l2norm(x w_qᵀ), v = x w_vᵀ, γ = 0.5 + σ(γ_raw),
  the closed-form chunk-mode Koopman readout of bench/torch_koopman_fit.py
  (torch.linalg.cholesky_ex / solve_triangular, power-iteration α detached, the
  polynomial filter with coef [H, K+1]), times η, then w_o.
- Attention mixer (`A`, models/attention.cpp with ops/causal_attention.cpp):
  one bias-free projection qkv [3·H·dh, d] whose output splits, in this order,
  into q, k and v, each viewed as [b, T, H, dh] (H = 4 heads of dh = 32). q and
  k are rotated by RoPE in the rotate-half layout: dimension j < dh/2 is paired
  with j + dh/2 (not with its neighbour 2j+1), and the pair at position t turns
  by the angle t·10000^(−2j/dh) (angles in float64, then cast; positions count
  from 0; v is not rotated). Then causal softmax attention per head with scale
  1/√dh (query t reads keys 0..t), heads concatenated back to [b, T, H·dh], and
  a bias-free out_proj [d, H·dh]. Echo's kernel keeps only the log-sum-exp per
  row and recomputes the scores in the backward, over the causal pairs only (7
  T×T-sized products; 0.34 GFLOP of the 11.8 GFLOP step at b = 32, T = 76); the
  eager port forms the whole T×T score matrix, masks it and lets autograd keep
  the probabilities (6 products over all T² pairs, 0.57 GFLOP): about 2% more
  arithmetic per step for attn-1m.
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

Prints one JSON line ("bench": "torch_lm1m", the model and its parameter count):
the median (and best, mean, max) step time and tokens/s over `--steps` timed
steps after `--warmup` steps.

    /usr/bin/python3 bench/torch_lm1m.py --model attn-1m --threads 2 --batch 32 --T 76
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Echo's parameter count of each preset (`echo-lm bench step --model M` prints it as "parameters").
PARAMETERS = {"ska-1m": 735_756, "ssm-1m": 831_328, "attn-1m": 752_112}


def load_config(model):
    """configs/<model>.json as the flat dict the modules below read; refuses what the port does not implement."""
    with open(os.path.join(REPO, "configs", model + ".json")) as f:
        j = json.load(f)

    def need(ok, what):
        if not ok:
            sys.exit(f"torch_lm1m: configs/{model}.json: the port only implements {what}")

    need(j["mlp"] == "swiglu", "mlp = swiglu")
    c = dict(vocab=j["vocab_size"], d=j["d_model"], pattern=j["layer_pattern"], d_ff=j["d_ff"], eps=j["norm_eps"])
    if "M" in c["pattern"]:
        m = j["mamba"]
        c.update(d_state=m["d_state"], expand=m["expand"], headdim=m["headdim"], ngroups=m["ngroups"],
                 d_conv=m["d_conv"], ssd_chunk=m["chunk_size"])
    if "S" in c["pattern"]:
        k = j["ska"]
        need(k["mode"] == "chunk" and k["filter"] == "poly" and not k["write_gate"],
             "SKA in chunk mode with the poly filter and no write gate")
        c.update(ska_heads=k["heads"], rank=k["rank"], head_dim_v=k["head_dim_v"], ska_chunk=k["chunk_size"],
                 ridge=k["ridge"], power_steps=k["power_steps"], power_iters=k["power_iters"])
    if "A" in c["pattern"]:
        a = j["attn"]
        c.update(attn_heads=a["heads"], attn_head_dim=a["head_dim"], rope_base=a["rope_base"])
    return c


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


class Attention(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d"]
        self.H, self.dh, self.base = c["attn_heads"], c["attn_head_dim"], c["rope_base"]
        w = self.H * self.dh
        self.qkv = param(3 * w, d, std=d ** -0.5)
        self.out_proj = param(d, w, std=w ** -0.5)

    def rotary(self, T, dtype):
        """cos, sin [T, 1, dh] of the rotate-half RoPE: both halves of a head share the angles t·base^(−2j/dh)."""
        j = torch.arange(self.dh // 2, dtype=torch.float64)
        angle = torch.arange(T, dtype=torch.float64)[:, None] * self.base ** (-2.0 * j / self.dh)
        angle = torch.cat([angle, angle], dim=-1)[:, None, :]
        return angle.cos().to(dtype), angle.sin().to(dtype)

    def forward(self, x):
        b, T, _ = x.shape
        q, k, v = (x @ self.qkv.t()).reshape(b, T, 3, self.H, self.dh).unbind(2)  # each [b, T, H, dh]
        cos, sin = self.rotary(T, x.dtype)
        half = self.dh // 2

        def rope(u):  # (u_j, u_{j+dh/2}) → (u_j cos − u_{j+dh/2} sin, u_{j+dh/2} cos + u_j sin)
            return u * cos + torch.cat([-u[..., half:], u[..., :half]], dim=-1) * sin

        q, k, v = rope(q).transpose(1, 2), rope(k).transpose(1, 2), v.transpose(1, 2)  # [b, H, T, dh]
        scores = (q @ k.transpose(-1, -2)) * self.dh ** -0.5
        future = torch.ones(T, T, dtype=torch.bool).triu(1)
        o = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ v
        return o.transpose(1, 2).reshape(b, T, self.H * self.dh) @ self.out_proj.t()


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
        self.mixer = {"M": Mamba, "S": Ska, "A": Attention}[letter](c)
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
    ap.add_argument("--model", choices=sorted(PARAMETERS), default="ska-1m")
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
    cfg = load_config(a.model)
    model = LM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    if n_params != PARAMETERS[a.model]:
        sys.exit(f"torch_lm1m: the port of {a.model} has {n_params:,} parameters, Echo's preset has "
                 f"{PARAMETERS[a.model]:,}: the port no longer matches models/ and configs/{a.model}.json")
    named = list(model.named_parameters())
    opt = torch.optim.AdamW([{"params": [p for n, p in named if decays(n)], "weight_decay": 0.1},
                             {"params": [p for n, p in named if not decays(n)], "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    tokens = torch.randint(0, cfg["vocab"], (a.batch, a.T))
    targets = torch.randint(0, cfg["vocab"], (a.batch, a.T))
    targets[torch.rand(a.batch, a.T) >= a.scored] = -100

    def step():
        opt.zero_grad(set_to_none=False)
        logits = model(tokens)
        loss = F.cross_entropy(logits.reshape(-1, cfg["vocab"]), targets.reshape(-1), ignore_index=-100)
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
    print(json.dumps({"bench": "torch_lm1m", "model": a.model, "parameters": n_params, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "batch": a.batch, "T": a.T, "steps": a.steps,
                      "step_ms": med * 1e3, "step_best_ms": best * 1e3, "step_mean_ms": mean * 1e3,
                      "step_max_ms": max(times) * 1e3, "step_s_each": times,
                      "tokens_per_s": a.batch * a.T / med, "tokens_per_s_best": a.batch * a.T / best,
                      "tokens_per_s_mean": a.batch * a.T / mean}))


if __name__ == "__main__":
    main()
