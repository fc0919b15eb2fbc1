"""The Echo language model of docs/spec.md §2 in PyTorch, built on spec_ops.py.

Parameters are plain float64 leaf tensors keyed by their dotted names (§2.6),
loaded from an echo-lm checkpoint (/model/<path>, config JSON in the root
attribute 'config', §5).
"""
import json
import math

import h5py
import torch

import spec_ops as ops


def load_checkpoint(path):
    """-> (config dict, {dotted name: float64 tensor requiring grad})."""
    params = {}
    with h5py.File(path, "r") as f:
        cfg = f.attrs["config"]
        cfg = json.loads(cfg.decode() if isinstance(cfg, bytes) else cfg)

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                params[name.replace("/", ".")] = torch.tensor(obj[()], dtype=torch.float64).requires_grad_(True)
        f["model"].visititems(visit)
    return cfg, params


class SpecLM:
    def __init__(self, cfg, params):
        self.cfg = cfg
        self.p = params
        self.eps = float(cfg.get("norm_eps", 1e-5))

    def linear(self, x, name):
        y = x @ self.p[name + ".weight"].T
        if name + ".bias" in self.p:
            y = y + self.p[name + ".bias"]
        return y

    # §2.1
    def mamba(self, x, pre):
        m = self.cfg["mamba"]
        d = self.cfg["d_model"]
        d_inner = m["expand"] * d
        P = m["headdim"]
        H = d_inner // P
        N, G = m["d_state"], m["ngroups"]
        conv_dim = d_inner + 2 * G * N
        b, T, _ = x.shape
        zxbcdt = self.linear(x, pre + "in_proj")
        z = zxbcdt[..., :d_inner]
        xBC = zxbcdt[..., d_inner:d_inner + conv_dim]
        dt_raw = zxbcdt[..., d_inner + conv_dim:]
        assert dt_raw.shape[-1] == H
        xBC = ops.silu(ops.causal_conv1d(xBC, self.p[pre + "conv1d.weight"], self.p.get(pre + "conv1d.bias")))
        xs = xBC[..., :d_inner].reshape(b, T, H, P)
        Bm = xBC[..., d_inner:d_inner + G * N].reshape(b, T, G, N)
        Cm = xBC[..., d_inner + G * N:].reshape(b, T, G, N)
        dt = ops.softplus(dt_raw + self.p[pre + "dt_bias"])
        A = -torch.exp(self.p[pre + "A_log"])
        y, _ = ops.ssd_scan(xs, dt, A, Bm, Cm, self.p[pre + "D"])
        y = ops.gated_rmsnorm(y.reshape(b, T, d_inner), z, self.p[pre + "norm.weight"], self.eps)
        return self.linear(y, pre + "out_proj")

    # §2.2
    def ska(self, x, pre, mask):
        s = self.cfg["ska"]
        Hs, r, Ps = s["heads"], s["rank"], s["head_dim_v"]
        b, T, _ = x.shape
        k = ops.l2norm(self.linear(x, pre + "w_k").reshape(b, T, Hs, r))
        q = ops.l2norm(self.linear(x, pre + "w_q").reshape(b, T, Hs, r))
        v = self.linear(x, pre + "w_v").reshape(b, T, Hs, Ps)
        beta = torch.sigmoid(self.linear(x, pre + "w_beta")) if s.get("write_gate", False) else None
        gamma = 0.5 + torch.sigmoid(self.p[pre + "gamma_raw"])
        coef = self.p[pre + "filter_coef"] if s.get("filter", "power") == "poly" else None
        use_mask = mask if s.get("mode", "chunk") == "prefix" else None
        if s.get("mode", "chunk") == "prefix" and mask is None:
            raise ValueError("prefix mode needs a mask")
        y = ops.koopman_fit(k, q, v, gamma, beta=beta, mask=use_mask, coef=coef, chunk_size=s["chunk_size"],
                            ridge=s["ridge"], power_steps=s["power_steps"], power_iters=s["power_iters"])
        y = self.p[pre + "eta"] * y
        return self.linear(y.reshape(b, T, Hs * Ps), pre + "w_o")

    # §2.3
    def attention(self, x, pre):
        a = self.cfg["attn"]
        Ha, dh = a["heads"], a["head_dim"]
        b, T, _ = x.shape
        qkv = self.linear(x, pre + "qkv")
        q, k, v = (qkv[..., i * Ha * dh:(i + 1) * Ha * dh].reshape(b, T, Ha, dh) for i in range(3))
        o = ops.causal_attention(q, k, v, float(a.get("rope_base", 10000.0)))
        return self.linear(o.reshape(b, T, Ha * dh), pre + "out_proj")

    # §2.4
    def mlp(self, x, pre):
        kind = self.cfg["mlp"]
        if kind == "koopman":
            g = ops.silu(self.linear(x, pre + "lift"))
            z = ops.koopman_rotate(g, self.p[pre + "rot_gamma"], self.p[pre + "rot_omega"])
            return self.linear(z, pre + "read")
        if kind == "swiglu":
            return self.linear(ops.silu(self.linear(x, pre + "gate")) * self.linear(x, pre + "up"), pre + "down")
        raise ValueError("mlp " + kind)

    # §2.5
    def forward(self, tokens, mask=None):
        E = self.p["embedding.weight"]
        x = E[tokens.long()]
        for i, kind in enumerate(self.cfg["layer_pattern"]):
            pre = "layers.%d." % i
            h = ops.rmsnorm(x, self.p[pre + "norm1.weight"], self.eps)
            if kind == "M":
                x = x + self.mamba(h, pre + "mixer.")
            elif kind == "S":
                x = x + self.ska(h, pre + "mixer.", mask)
            elif kind == "A":
                x = x + self.attention(h, pre + "mixer.")
            else:
                raise ValueError(kind)
            if self.cfg["mlp"] != "none":
                x = x + self.mlp(ops.rmsnorm(x, self.p[pre + "norm2.weight"], self.eps), pre + "mlp.")
        x = ops.rmsnorm(x, self.p["norm_f.weight"], self.eps)
        return x @ E.T

    def loss(self, logits, targets):
        return ops.cross_entropy(logits, targets)


def param_count(params):
    return sum(math.prod(p.shape) for p in params.values())
