#!/usr/bin/env python3
"""PyTorch CPU timing of koopman_fit in chunk mode: the same math as
ops/koopman_fit.cpp (spec §1.4), batched over (batch, head, chunk) with
torch.linalg.cholesky_ex / solve_triangular and autograd for the backward
(α detached). Prints one JSON line, like `echo-lm bench koopman_fit`.

    python3 bench/torch_koopman_fit.py --b 4 --T 1024 --H 4 --r 24 --P 32
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def koopman_fit(k, q, v, gamma, chunk_size=64, ridge=1e-3, power_steps=2, power_iters=6, beta=None, coef=None):
    """k, q [b,T,H,r]; v [b,T,H,P]; gamma [1]; beta [b,T,H] or None; coef [H,K+1] or None -> y [b,T,H,P]."""
    b, T, H, r = k.shape
    P = v.shape[-1]
    S, K = chunk_size, power_steps
    n_chunks = (T + S - 1) // S
    pad = n_chunks * S - T
    kk, qq, vv = (x.permute(0, 2, 1, 3) for x in (k, q, v))  # [b,H,T,.]
    w = beta.permute(0, 2, 1) if beta is not None else torch.ones(b, H, T, dtype=k.dtype)
    k_prev = F.pad(kk, (0, 0, 1, 0))[:, :, :T]  # k_{t-1}, zero at t = 0
    lag = torch.cat([torch.zeros_like(w[..., :1]), w[..., 1:]], dim=-1)  # no pair at t = 0

    def chunks(x):  # [b,H,T,...] -> [b,H,n_chunks,S,...]
        x = F.pad(x, (0, 0, 0, pad)) if x.dim() == 4 else F.pad(x, (0, pad))
        return x.reshape(b, H, n_chunks, S, *x.shape[3:])

    Kc, Kp, Vc, Qc = chunks(kk), chunks(k_prev), chunks(vv), chunks(qq)
    wc, lc = chunks(w)[..., None], chunks(lag)[..., None]
    # Per-chunk statistics, then the exclusive prefix over chunks.
    dG = (Kc * wc).transpose(-1, -2) @ Kc
    dM = (Kc * lc).transpose(-1, -2) @ Kp
    dCt = (Kc * wc).transpose(-1, -2) @ Vc  # Cᵀ [.., r, P]
    G, M, Ct = (torch.cumsum(x, dim=2) - x for x in (dG, dM, dCt))
    eye = torch.eye(r, dtype=k.dtype)
    G = 0.5 * (G + G.transpose(-1, -2)) + ridge * eye
    L, info = torch.linalg.cholesky_ex(G)
    if bool((info > 0).any()):
        L_retry, _ = torch.linalg.cholesky_ex(G + 1e-4 * eye)
        L = torch.where((info > 0)[..., None, None], L_retry, L)
    X = torch.linalg.solve_triangular(L, M, upper=False)  # L⁻¹ M
    W = torch.linalg.solve_triangular(L, X.transpose(-1, -2), upper=False).transpose(-1, -2)  # L⁻¹ M L⁻ᵀ
    with torch.no_grad():  # spectral scale, detached
        vec = torch.full((b, H, n_chunks, r, 1), r ** -0.5, dtype=k.dtype)
        for _ in range(power_iters):
            u = W @ vec
            u = u / u.norm(dim=-2, keepdim=True).clamp_min(1e-8)
            vec = W.transpose(-1, -2) @ u
            vec = vec / vec.norm(dim=-2, keepdim=True).clamp_min(1e-8)
        sigma = (W @ vec).norm(dim=-2).squeeze(-1)
        alpha = 1.0 / sigma.clamp_min(1.0)
    s = (gamma * alpha)[..., None, None]
    c = coef if coef is not None else torch.cat([torch.zeros(H, K, dtype=k.dtype), torch.ones(H, 1, dtype=k.dtype)], 1)
    c = c[None, :, None, :]  # [1,H,1,K+1]
    power = eye.expand_as(W)
    Fm = c[..., 0, None, None] * power
    for j in range(1, K + 1):
        power = power @ W
        Fm = Fm + c[..., j, None, None] * s ** j * power
    Y1 = torch.linalg.solve_triangular(L.transpose(-1, -2), Fm, upper=True)  # L⁻ᵀ F
    Z = torch.linalg.solve_triangular(L.transpose(-1, -2), Y1.transpose(-1, -2), upper=True).transpose(-1, -2)
    R = Ct.transpose(-1, -2) @ Z  # C Z [.., P, r]
    y = Qc @ R.transpose(-1, -2)  # [b,H,n_chunks,S,P]
    y = y.reshape(b, H, n_chunks * S, P)[:, :, :T]
    return y.permute(0, 2, 1, 3)


def main():
    ap = argparse.ArgumentParser()
    for name, default in [("b", 4), ("T", 1024), ("H", 4), ("r", 24), ("P", 32), ("chunk_size", 64),
                          ("power_steps", 2), ("power_iters", 6), ("threads", 2), ("iters", 10), ("warmup", 2)]:
        ap.add_argument("--" + name, type=int, default=default)
    ap.add_argument("--dtype", choices=["f32", "f64"], default="f32")
    ap.add_argument("--beta", action="store_true")
    ap.add_argument("--coef", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dt = torch.float32 if a.dtype == "f32" else torch.float64
    k = F.normalize(torch.randn(a.b, a.T, a.H, a.r, dtype=dt), dim=-1).requires_grad_()
    q = F.normalize(torch.randn(a.b, a.T, a.H, a.r, dtype=dt), dim=-1).requires_grad_()
    v = torch.randn(a.b, a.T, a.H, a.P, dtype=dt).requires_grad_()
    gamma = torch.tensor([0.9], dtype=dt).requires_grad_()
    beta = (0.5 + 0.5 * torch.rand(a.b, a.T, a.H, dtype=dt)).requires_grad_() if a.beta else None
    coef = torch.full((a.H, a.power_steps + 1), 1.0 / (a.power_steps + 1), dtype=dt).requires_grad_() if a.coef else None
    seed = torch.randn(a.b, a.T, a.H, a.P, dtype=dt)
    kwargs = dict(chunk_size=a.chunk_size, power_steps=a.power_steps, power_iters=a.power_iters, beta=beta, coef=coef)

    def median_ms(fn):
        for _ in range(a.warmup):
            fn()
        times = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    def forward():
        with torch.no_grad():
            koopman_fit(k, q, v, gamma, **kwargs)

    def forward_backward():
        for x in (k, q, v, gamma, beta, coef):
            if x is not None:
                x.grad = None
        koopman_fit(k, q, v, gamma, **kwargs).backward(seed)

    print(json.dumps({"bench": "torch_koopman_fit", "torch": torch.__version__, "dtype": a.dtype, "mode": "chunk",
                      "b": a.b, "T": a.T, "H": a.H, "r": a.r, "P": a.P, "chunk_size": a.chunk_size,
                      "power_steps": a.power_steps, "power_iters": a.power_iters, "beta": a.beta, "coef": a.coef,
                      "threads": torch.get_num_threads(), "forward_ms": median_ms(forward),
                      "forward_backward_ms": median_ms(forward_backward)}))


if __name__ == "__main__":
    main()
