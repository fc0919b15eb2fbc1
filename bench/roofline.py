#!/usr/bin/env python3
"""FLOPs of one training step (forward + backward) of a preset, for the
roofline fractions in docs/benchmarks.md.

Counts, per sequence of T tokens (a multiply-add is 2 FLOP; backward of a
linear layer is 2× its forward, so a linear layer costs 6·in·out per token):
- every linear layer: in_proj, out_proj (M); w_k, w_q, w_v, w_o (S); qkv,
  out_proj (A); the MLP (SwiGLU gate/up/down, Koopman lift/read); the tied
  output projection d·V;
- the depthwise conv (W per channel per token) as a linear layer of W·conv_dim;
- the SSD scan and the Koopman fit with the same formulas as
  bench/bench_ssd_scan.cpp (count_flops) and bench/bench_koopman_fit.cpp
  (count_work), chunk mode, no β;
- attention: 2·(causal pairs)·dh for QKᵀ and PV, ×3 for forward+backward.
Elementwise work (norms, activations, the loss, AdamW) is left out: it is
O(params + b·T·width) and memory-bound.

    python3 bench/roofline.py --model ska-1m --batch 32 --T 76 [--ms 123]
prints one JSON line: GFLOP per step, and with --ms the achieved GFLOP/s.
"""
import argparse
import json
import math
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def ssd_flops(T, H, P, N, G, Q):
    fwd = bwd = 0.0
    for t0 in range(0, T, Q):
        L = min(Q, T - t0)
        tri = L * (L + 1) / 2
        fwd += 2 * (G * tri * N + H * (tri * P + 2 * L * P * N))
        bwd += 2 * (G * 3 * tri * N + H * (2 * tri * P + 4 * L * P * N))
    return fwd + bwd


def koopman_flops(T, H, r, P, S, K, iters):
    n_ops = math.ceil(T / S) - 1
    r3, r2 = r ** 3, r ** 2
    stats = 2 * T * (2 * r2 + r * P)
    op = r3 / 3 + 2 * r3 + (4 * iters + 2) * r2 + 2 * r3 * max(0, K - 1) + 2 * r3 + 2 * r2 * P
    readout = 2 * T * r * P
    op_back = 4 * r2 * P + 2 * r3 + 2 * r3 * K * 2 + 2 * r3 * max(0, K - 1) + 2 * r3 + 4 * r3
    tokens_back = 2 * T * r * P + 2 * T * (3 * r2 + 3 * r * P)
    return H * (stats + n_ops * op + readout + readout + n_ops * op_back + tokens_back)


def step_flops(cfg, T):
    """FLOPs of forward+backward for one sequence of T tokens."""
    d, V = cfg["d_model"], cfg["vocab_size"]
    linear_macs = d * V  # tied output projection
    other = 0.0
    for letter in cfg["layer_pattern"]:
        if letter == "M":
            m = cfg["mamba"]
            d_inner = m["expand"] * d
            H, P, N, G = d_inner // m["headdim"], m["headdim"], m["d_state"], m["ngroups"]
            conv_dim = d_inner + 2 * G * N
            linear_macs += d * (2 * d_inner + 2 * G * N + H) + d_inner * d + conv_dim * m["d_conv"]
            other += ssd_flops(T, H, P, N, G, m["chunk_size"])
        elif letter == "S":
            s = cfg["ska"]
            H, r, P = s["heads"], s["rank"], s["head_dim_v"]
            linear_macs += 2 * d * H * r + 2 * d * H * P + (H * d if s["write_gate"] else 0)
            other += koopman_flops(T, H, r, P, s["chunk_size"], s["power_steps"], s["power_iters"])
        elif letter == "A":
            a = cfg["attn"]
            linear_macs += d * 3 * a["heads"] * a["head_dim"] + a["heads"] * a["head_dim"] * d
            other += 3 * 2 * 2 * (T * (T + 1) / 2) * a["heads"] * a["head_dim"]
        if cfg["mlp"] == "swiglu":
            linear_macs += 3 * d * cfg["d_ff"]
        elif cfg["mlp"] == "koopman":
            dk = math.ceil(8 * d / 3 / 64) * 64
            linear_macs += 2 * d * dk
    return 6 * linear_macs * T + other, 6 * linear_macs, other


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ska-1m")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--T", type=int, default=76)
    ap.add_argument("--ms", type=float, default=0, help="measured step time in ms")
    a = ap.parse_args()
    with open(os.path.join(HERE, "..", "configs", a.model + ".json")) as f:
        cfg = json.load(f)
    total, per_token_linear, mixer_other = step_flops(cfg, a.T)
    out = {"model": a.model, "batch": a.batch, "T": a.T, "tokens": a.batch * a.T,
           "step_gflop": a.batch * total / 1e9, "linear_mflop_per_token": per_token_linear / 1e6,
           "scan_fit_attention_gflop": a.batch * mixer_other / 1e9}
    if a.ms > 0:
        out["gflops"] = out["step_gflop"] / (a.ms / 1e3)
        out["tokens_per_s"] = out["tokens"] / (a.ms / 1e3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
