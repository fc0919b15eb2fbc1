"""Naive PyTorch reference of the Echo runner ops (docs/spec.md §1, §6.2).

Written from the spec alone, as an independent cross-check of the C++ engine:
plain loops and textbook formulas, no chunked algorithms, gradients by torch
autograd. Meant for float64 inputs.
"""
import math

import torch


def silu(x):
    return x * torch.sigmoid(x)


def softplus(x):
    # §0: log(1 + e^x), identity above 20.
    return torch.where(x > 20, x, torch.log1p(torch.exp(torch.clamp(x, max=20.0))))


# ---------------------------------------------------------------- §1.2
def causal_conv1d(x, w, bias=None):
    """y[t,c] = bias[c] + sum_k w[c,k] x[t-(W-1)+k, c], x = 0 at negative time."""
    b, T, Ch = x.shape
    W = w.shape[1]
    xpad = torch.cat([x.new_zeros(b, W - 1, Ch), x], dim=1)  # index t+(W-1) is time t
    y = x.new_zeros(b, T, Ch)
    for k in range(W):
        # time t-(W-1)+k sits at padded index t+k
        y = y + w[:, k] * xpad[:, k:k + T, :]
    if bias is not None:
        y = y + bias
    return y


# ---------------------------------------------------------------- §1.3
def rmsnorm(x, w, eps=1e-5):
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * w


def gated_rmsnorm(x, z, w, eps=1e-5):
    return rmsnorm(x * silu(z), w, eps)


def l2norm(x):
    return x / torch.sqrt((x * x).sum(dim=-1, keepdim=True) + 1e-6)


# ---------------------------------------------------------------- §1.1
def ssd_scan(x, dt, A, B, C, D=None, h0=None, chunk_size=64):
    """The defining recurrence, one step at a time (chunk_size does not matter).

    h_t = exp(dt_t A) h_{t-1} + dt_t x_t ⊗ B_t ;  y_t = h_t C_t + D x_t
    Head h reads group h // (H/G).
    """
    b, T, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    assert H % G == 0
    rep = H // G
    Bh = B.repeat_interleave(rep, dim=2)  # [b,T,H,N]
    Ch = C.repeat_interleave(rep, dim=2)
    h = h0 if h0 is not None else x.new_zeros(b, H, P, N)
    ys = []
    for t in range(T):
        decay = torch.exp(dt[:, t] * A)  # [b,H]
        h = decay[:, :, None, None] * h + dt[:, t, :, None, None] * x[:, t, :, :, None] * Bh[:, t, :, None, :]
        y = torch.einsum("bhpn,bhn->bhp", h, Ch[:, t])
        if D is not None:
            y = y + D[None, :, None] * x[:, t]
        ys.append(y)
    return torch.stack(ys, dim=1), h


# ---------------------------------------------------------------- §1.4
def _cholesky_with_retry(G):
    """G [..., r, r] symmetric. Cholesky; where it fails, of G + 1e-4 I (spec step 1).
    Returns (L, G_used)."""
    r = G.shape[-1]
    L, info = torch.linalg.cholesky_ex(G)
    if bool((info != 0).any()):
        bump = (info != 0).to(G.dtype)[..., None, None] * 1e-4 * torch.eye(r, dtype=G.dtype)
        G = G + bump
        L = torch.linalg.cholesky(G)
    return L, G


def _power_sigma(W, iters):
    """Detached spectral-norm estimate of W [..., r, r] (spec step 3)."""
    with torch.no_grad():
        r = W.shape[-1]
        v = torch.full(W.shape[:-1], 1.0 / math.sqrt(r), dtype=W.dtype)
        for _ in range(iters):
            Wv = torch.einsum("...ij,...j->...i", W, v)
            u = Wv / torch.clamp(Wv.norm(dim=-1, keepdim=True), min=1e-8)
            Wtu = torch.einsum("...ji,...j->...i", W, u)
            v = Wtu / torch.clamp(Wtu.norm(dim=-1, keepdim=True), min=1e-8)
        sigma = torch.einsum("...ij,...j->...i", W, v).norm(dim=-1)
    return sigma


def koopman_readout(Gs, Ms, Cs, q, gamma, K, power_iters, coef=None, stats=None):
    """Operator from statistics and readout for queries q.

    Gs, Ms [b,H,r,r], Cs [b,H,P,r], q [b,H,n,r] -> y [b,H,n,P].
    y = sum_j c_j (γα)^j C (G⁻¹M)^j G⁻¹ q   (c = coef[h] or one-hot at j=K).
    """
    Gs = 0.5 * (Gs + Gs.transpose(-1, -2))
    L, Gs = _cholesky_with_retry(Gs)
    # W = L⁻¹ M L⁻ᵀ, only for the detached spectral scale α.
    with torch.no_grad():
        X = torch.linalg.solve_triangular(L, Ms, upper=False)  # L⁻¹ M
        Wm = torch.linalg.solve_triangular(L, X.transpose(-1, -2), upper=False).transpose(-1, -2)  # (L⁻¹ (L⁻¹M)ᵀ)ᵀ
        sigma = _power_sigma(Wm, power_iters)
        alpha = 1.0 / torch.clamp(sigma, min=1.0)  # [b,H]
    if stats is not None:
        stats.setdefault("sigma", []).append(sigma.max().item())
    ga = gamma.reshape(()) * alpha  # [b,H], α a constant for autograd
    # Readout with G⁻¹ as a linear solve (independent of the triangular route above).
    Z = torch.linalg.solve(Gs, q.transpose(-1, -2))  # G⁻¹ qᵀ  [b,H,r,n]
    y = 0
    for j in range(K + 1):
        if j > 0:
            Z = torch.linalg.solve(Gs, Ms @ Z)  # (G⁻¹M) Z
        if coef is None and j != K:
            continue  # power filter: only the j = K term, coefficient 1
        cj = coef[:, j][None, :, None, None] if coef is not None else 1.0
        term = (ga ** j)[..., None, None] * (Cs @ Z)  # [b,H,P,n]
        y = y + cj * term
    return y.transpose(-1, -2)  # [b,H,n,P]


def koopman_stats(k, v, beta, sel):
    """Statistics over the positions where sel[b,t] (bool [b,T]) holds; lag pair
    t needs sel[t] and sel[t-1]. k [b,T,H,r], v [b,T,H,P], beta [b,T,H].
    Returns G without the ridge, M, C as sums."""
    selw = sel.to(k.dtype)[:, :, None] * beta  # [b,T,H]
    G = torch.einsum("bth,bthi,bthj->bhij", selw, k, k)
    C = torch.einsum("bth,bthp,bthj->bhpj", selw, v, k)
    lag = (sel[:, 1:] & sel[:, :-1]).to(k.dtype)[:, :, None] * beta[:, 1:]
    M = torch.einsum("bth,bthi,bthj->bhij", lag, k[:, 1:], k[:, :-1])
    return G, M, C


def koopman_fit(k, q, v, gamma, beta=None, mask=None, coef=None, chunk_size=64, ridge=1e-3, power_steps=2,
                power_iters=6, stats=None):
    b, T, H, r = k.shape
    P = v.shape[-1]
    K = int(power_steps)
    S = int(chunk_size)
    if beta is None:
        beta = k.new_ones(b, T, H)
    eye = torch.eye(r, dtype=k.dtype)
    qh = q.permute(0, 2, 1, 3)  # [b,H,T,r]
    if mask is not None:
        sel = mask != 0
        G, M, C = koopman_stats(k, v, beta, sel)
        y = koopman_readout(ridge * eye + G, M, C, qh, gamma, K, power_iters, coef, stats)
        return y.permute(0, 2, 1, 3)
    outs = []
    t_index = torch.arange(T)
    for c0 in range(0, T, S):
        c1 = min(c0 + S, T)
        sel = (t_index < c0)[None, :].expand(b, T)
        G, M, C = koopman_stats(k, v, beta, sel)
        outs.append(koopman_readout(ridge * eye + G, M, C, qh[:, :, c0:c1], gamma, K, power_iters, coef, stats))
    return torch.cat(outs, dim=2).permute(0, 2, 1, 3)


# ---------------------------------------------------------------- §1.5
def koopman_rotate(g, rot_gamma, rot_omega):
    rho = torch.clamp(torch.sqrt(rot_gamma ** 2 + rot_omega ** 2), min=1e-8)
    s = torch.clamp(rho, max=1.0) / rho
    gp, wp = s * rot_gamma, s * rot_omega
    ge, go = g[..., 0::2], g[..., 1::2]
    ze = gp * ge + wp * go
    zo = -wp * ge + gp * go
    return torch.stack([ze, zo], dim=-1).reshape(g.shape)


# ---------------------------------------------------------------- §1.6
def rope(x, base=10000.0):
    """Rotate-half RoPE on x [b,T,H,dh]: pairs (j, j+dh/2), angle t·base^(−2j/dh)."""
    b, T, H, dh = x.shape
    half = dh // 2
    j = torch.arange(half, dtype=x.dtype)
    inv = base ** (-2.0 * j / dh)
    ang = torch.arange(T, dtype=x.dtype)[:, None] * inv[None, :]  # [T,half]
    cos, sin = torch.cos(ang)[None, :, None, :], torch.sin(ang)[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def causal_attention(q, k, v, rope_base=10000.0):
    b, T, H, dh = q.shape
    qr, kr = rope(q, rope_base), rope(k, rope_base)
    scores = torch.einsum("bthd,bshd->bhts", qr, kr) / math.sqrt(dh)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    p = torch.softmax(scores, dim=-1)
    return torch.einsum("bhts,bshd->bthd", p, v)


# ---------------------------------------------------------------- §1.7
def cross_entropy(logits, targets):
    V = logits.shape[-1]
    lf = logits.reshape(-1, V)
    tf = targets.reshape(-1).long()
    keep = tf != -100
    lse = torch.logsumexp(lf[keep], dim=-1)
    picked = lf[keep].gather(1, tf[keep][:, None])[:, 0]
    return (lse - picked).mean()


# Runner table: name -> (function, inputs in spec order, differentiable inputs, outputs)
RUNNER = {
    "causal_conv1d": (causal_conv1d, ["x", "w", "bias"], ["x", "w", "bias"], ["y"]),
    "gated_rmsnorm": (gated_rmsnorm, ["x", "z", "w"], ["x", "z", "w"], ["y"]),
    "ssd_scan": (ssd_scan, ["x", "dt", "A", "B", "C", "D", "h0"], ["x", "dt", "A", "B", "C", "D", "h0"],
                 ["y", "h_final"]),
    "koopman_fit": (koopman_fit, ["k", "q", "v", "gamma", "beta", "mask", "coef"],
                    ["k", "q", "v", "gamma", "beta", "coef"], ["y"]),
    "causal_attention": (causal_attention, ["q", "k", "v"], ["q", "k", "v"], ["y"]),
}
