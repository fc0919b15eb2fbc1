#!/usr/bin/env python3
"""PyTorch CPU baseline for bench_ssd_scan: the same chunked SSD algorithm
(docs/ssd.md) written with plain tensor ops, differentiated by autograd.

Prints one JSON line with the median (and minimum) forward and forward+backward
times in ms.
Run with the system interpreter that has torch, e.g.
    /usr/bin/python3 bench/torch_ssd_scan.py --threads 2
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def segsum(a):
    """seg[..., i, j] = sum_{k=j+1..i} a[..., k] for j <= i, -inf above the
    diagonal: a masked cumulative sum down each column (no differences)."""
    Q = a.size(-1)
    lower_strict = torch.tril(torch.ones(Q, Q, dtype=torch.bool), diagonal=-1)
    cols = a[..., :, None].expand(*a.shape, Q).masked_fill(~lower_strict, 0.0)  # [.., i, j] = a_i for i > j
    seg = torch.cumsum(cols, dim=-2)
    return seg.masked_fill(~torch.tril(torch.ones(Q, Q, dtype=torch.bool)), float("-inf"))


def ssd_chunked(x, dt, A, B, C, D, chunk):
    """x [b,T,H,P], dt [b,T,H], A [H], B/C [b,T,G,N], D [H] -> y [b,T,H,P], h_final [b,H,P,N]."""
    b, T, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    pad = (-T) % chunk
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))  # dt = 0 on padding: no decay, no input
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    c = x.shape[1] // chunk
    Q = chunk
    # [b, c, heads or groups, Q, features]: every chunk product is a batched matmul
    xh = x.reshape(b, c, Q, H, P).permute(0, 1, 3, 2, 4)
    Bg = B.reshape(b, c, Q, G, N).permute(0, 1, 3, 2, 4)
    Cg = C.reshape(b, c, Q, G, N).permute(0, 1, 3, 2, 4)
    Bh = Bg.repeat_interleave(H // G, dim=2)
    Ch = Cg.repeat_interleave(H // G, dim=2)
    dth = dt.reshape(b, c, Q, H).permute(0, 1, 3, 2)  # [b,c,H,Q]
    a = dth * A[:, None]
    cin = torch.cumsum(a, dim=-1)                                           # sum_{k<=i} a_k
    cout = torch.flip(torch.cumsum(torch.flip(a, [-1]), dim=-1), [-1]) - a  # sum_{k>j} a_k
    # intra-chunk: Y_diag = (L o C B^T o dt_j) X
    CB = (Cg @ Bg.transpose(-1, -2)).repeat_interleave(H // G, dim=2)      # [b,c,H,Q,Q]
    M = torch.exp(segsum(a)) * CB * dth[..., None, :]
    y_diag = M @ xh
    # chunk states S_c = sum_j exp(cout_j) dt_j x_j (x) B_j and their recurrence
    states = (xh * (torch.exp(cout) * dth)[..., None]).transpose(-1, -2) @ Bh  # [b,c,H,P,N]
    decay_chunk = torch.exp(cin[..., -1])  # [b,c,H]
    h = x.new_zeros(b, H, P, N)
    entering = []
    for k in range(c):
        entering.append(h)
        h = decay_chunk[:, k, :, None, None] * h + states[:, k]
    h_in = torch.stack(entering, dim=1)  # [b,c,H,P,N]
    # from the entering state: y_i += exp(cin_i) h_c C_i
    y_off = (Ch * torch.exp(cin)[..., None]) @ h_in.transpose(-1, -2)  # [b,c,H,Q,P]
    y = (y_diag + y_off).permute(0, 1, 3, 2, 4).reshape(b, c * Q, H, P)[:, :T] + D[:, None] * x[:, :T]
    return y, h


def times_ms(fn, iters, warmup=1):
    """Sorted wall times in ms after `warmup` runs (median and min are reported,
    as in bench_ssd_scan.cpp)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--b", type=int, default=4)
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--H", type=int, default=8)
    ap.add_argument("--P", type=int, default=64)
    ap.add_argument("--N", type=int, default=64)
    ap.add_argument("--G", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--iters", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check", action="store_true", help="compare against the sequential recurrence (small shapes)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, T, H, P, N, G = args.b, args.T, args.H, args.P, args.N, args.G
    x = torch.randn(b, T, H, P)
    dt = torch.empty(b, T, H).uniform_(0.01, 0.2)
    A = torch.empty(H).uniform_(-8.0, -1.0)
    B = torch.randn(b, T, G, N)
    C = torch.randn(b, T, G, N)
    D = torch.randn(H)
    dy = torch.randn(b, T, H, P)
    dh = torch.randn(b, H, P, N)

    if args.check:
        y, hf = ssd_chunked(x.double(), dt.double(), A.double(), B.double(), C.double(), D.double(), args.chunk)
        h = torch.zeros(b, H, P, N, dtype=torch.float64)
        Bh, Ch = B.double().repeat_interleave(H // G, 2), C.double().repeat_interleave(H // G, 2)
        ys = []
        for t in range(T):
            al = torch.exp(dt[:, t].double() * A.double())[..., None, None]
            h = al * h + (dt[:, t].double()[..., None] * x[:, t].double())[..., None] * Bh[:, t, :, None, :]
            ys.append(torch.einsum("bhpn,bhn->bhp", h, Ch[:, t]) + D.double()[:, None] * x[:, t].double())
        yr = torch.stack(ys, 1)
        print(json.dumps({"check_y": (y - yr).abs().max().item(), "check_h": (hf - h).abs().max().item()}))

    def fwd():
        with torch.no_grad():
            ssd_chunked(x, dt, A, B, C, D, args.chunk)

    leaves = [t.clone().requires_grad_(True) for t in (x, dt, A, B, C, D)]

    def fwd_bwd():
        for t in leaves:
            t.grad = None
        y, hf = ssd_chunked(*leaves, args.chunk)
        torch.autograd.backward([y, hf], [dy, dh])

    f, fb = times_ms(fwd, args.iters), times_ms(fwd_bwd, args.iters)
    print(json.dumps({
        "bench": "torch_ssd_scan", "threads": args.threads, "b": b, "T": T, "H": H, "P": P, "N": N, "G": G,
        "chunk": args.chunk, "torch": torch.__version__,
        "forward_ms": statistics.median(f), "forward_backward_ms": statistics.median(fb),
        "forward_min_ms": f[0], "forward_backward_min_ms": fb[0],
    }))


if __name__ == "__main__":
    main()
