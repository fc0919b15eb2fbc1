"""Cross-check of the runner ops (spec §6.2): echo-lm op vs the PyTorch reference in spec_ops.py.

For each case: random float64 inputs and output gradients -> IN.h5; `echo-lm op NAME --in IN.h5
--out OUT.h5 --dtype f64|f32`; outputs and grad_<input> compared with torch autograd
(max|engine-torch| / max|torch|). Exits non-zero when a comparison exceeds its tolerance.

    /usr/bin/python3 bench/xcheck/check_ops.py [--echo-lm build/echo-lm] [--ops a,b] [--keep DIR]
"""
import argparse
import os
import sys
import tempfile

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spec_ops  # noqa: E402
from common import Table, default_binary, rel_err, run_echo  # noqa: E402

torch.set_default_dtype(torch.float64)

TOL = {  # (f64, f32)
    "causal_conv1d": (1e-10, 1e-5),
    "gated_rmsnorm": (1e-10, 1e-5),
    "ssd_scan": (1e-10, 1e-5),
    "koopman_fit": (1e-9, 1e-4),
    "causal_attention": (1e-10, 1e-5),
}


def unit_rows(rng, *shape):
    a = rng.standard_normal(shape)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def cases(rng):
    """(label, op, inputs dict, attrs dict, output-gradient names)."""
    out = []
    # causal_conv1d
    for (b, T, Ch, W, bias) in [(2, 17, 5, 4, True), (1, 3, 6, 4, False), (3, 70, 8, 2, True), (2, 9, 4, 1, True)]:
        inp = {"x": rng.standard_normal((b, T, Ch)), "w": rng.standard_normal((Ch, W))}
        if bias:
            inp["bias"] = rng.standard_normal(Ch)
        out.append(("conv b%d T%d C%d W%d%s" % (b, T, Ch, W, " bias" if bias else ""), "causal_conv1d", inp, {},
                    ["y"]))
    # gated_rmsnorm
    for (shape, eps) in [((2, 7, 16), None), ((3, 5, 33), 1e-3), ((1, 1, 4), 1e-6)]:
        inp = {"x": rng.standard_normal(shape), "z": 2 * rng.standard_normal(shape),
               "w": 1 + 0.3 * rng.standard_normal(shape[-1])}
        attrs = {} if eps is None else {"eps": eps}
        out.append(("grms %s eps%s" % ("x".join(map(str, shape)), eps or "def"), "gated_rmsnorm", inp, attrs, ["y"]))
    # ssd_scan
    for (b, T, H, P, G, N, cs, withD, withh0, grads) in [
            (2, 150, 4, 3, 1, 5, 64, True, False, ["y", "h_final"]),
            (1, 37, 4, 2, 2, 3, 16, False, True, ["y", "h_final"]),
            (2, 64, 6, 4, 3, 4, 16, True, True, ["y"]),
            (1, 50, 2, 3, 2, 2, 7, True, True, ["h_final"]),
            (2, 40, 4, 2, 1, 6, None, False, False, ["y", "h_final"])]:
        inp = {"x": rng.standard_normal((b, T, H, P)),
               "dt": np.log1p(np.exp(rng.standard_normal((b, T, H)) - 1.0)),
               "A": -np.exp(rng.uniform(-1, 1, H)),
               "B": rng.standard_normal((b, T, G, N)), "C": rng.standard_normal((b, T, G, N))}
        if withD:
            inp["D"] = rng.standard_normal(H)
        if withh0:
            inp["h0"] = rng.standard_normal((b, H, P, N))
        attrs = {} if cs is None else {"chunk_size": cs}
        label = "ssd b%d T%d H%d P%d G%d N%d cs%s%s%s g:%s" % (b, T, H, P, G, N, cs or "def", " D" if withD else "",
                                                                " h0" if withh0 else "", "+".join(grads))
        out.append((label, "ssd_scan", inp, attrs, grads))
    # koopman_fit
    kcases = [
        # b, T, H, r, P, cs, K, iters, ridge, beta, mask, coef
        (2, 150, 3, 8, 5, 64, 2, 6, None, False, None, False),
        (1, 37, 2, 6, 4, 16, 1, 6, 1e-2, False, None, True),
        (2, 70, 2, 5, 3, 16, 0, 3, None, False, None, False),
        (2, 45, 2, 6, 4, 8, 3, 6, None, False, None, True),
        (2, 150, 2, 8, 4, None, 2, 6, None, True, None, True),
        (2, 60, 3, 6, 4, 16, 2, 6, None, False, "prefix", False),
        (2, 60, 2, 6, 4, 16, 2, 6, None, False, "holes", True),
        (2, 60, 2, 6, 4, 16, 1, 6, None, True, "prefix", True),
    ]
    for (b, T, H, r, P, cs, K, iters, ridge, beta, mask, coef) in kcases:
        inp = {"k": unit_rows(rng, b, T, H, r), "q": unit_rows(rng, b, T, H, r),
               "v": rng.standard_normal((b, T, H, P)), "gamma": np.array([0.5 + sigmoid(rng.standard_normal())])}
        if beta:
            inp["beta"] = sigmoid(rng.standard_normal((b, T, H)))
        if mask == "prefix":
            m = np.zeros((b, T), dtype=np.int32)
            for i in range(b):
                m[i, :rng.integers(T // 2, T - 5)] = 1
            inp["mask"] = m
        elif mask == "holes":
            inp["mask"] = (rng.random((b, T)) < 0.7).astype(np.int32)
        if coef:
            inp["coef"] = rng.standard_normal((H, K + 1))
        attrs = {"power_steps": K, "power_iters": iters}
        if cs is not None:
            attrs["chunk_size"] = cs
        if ridge is not None:
            attrs["ridge"] = ridge
        label = "koop b%d T%d H%d r%d P%d cs%s K%d it%d%s%s%s%s" % (
            b, T, H, r, P, cs or "def", K, iters, " ridge%g" % ridge if ridge else "", " beta" if beta else "",
            " mask:" + mask if mask else "", " coef" if coef else "")
        out.append((label, "koopman_fit", inp, attrs, ["y"]))
    # α < 1 on purpose: keys alternate between two directions and the write weights favour the
    # lag pairs that point one way, so the whitened operator has σ̂ > 1 (α detached on both sides).
    b, T, H, r, P = 2, 48, 2, 4, 3
    base = unit_rows(rng, 2, H, r)
    k = np.stack([base[t % 2] for t in range(T)])[None].repeat(b, 0) + 0.05 * rng.standard_normal((b, T, H, r))
    k = k / np.linalg.norm(k, axis=-1, keepdims=True)
    beta = np.where(np.arange(T) % 2 == 0, 0.95, 0.05)[None, :, None].repeat(b, 0).repeat(H, 2)
    inp = {"k": k, "q": unit_rows(rng, b, T, H, r), "v": rng.standard_normal((b, T, H, P)),
           "gamma": np.array([1.3]), "beta": beta, "coef": rng.standard_normal((H, 3))}
    out.append(("koop b2 T48 H2 r4 P3 cs16 K2 beta coef alpha<1", "koopman_fit", inp, {"chunk_size": 16}, ["y"]))
    # causal_attention
    for (b, T, H, dh, base) in [(2, 19, 3, 8, None), (1, 70, 2, 16, 500.0), (2, 1, 1, 4, None)]:
        inp = {"q": rng.standard_normal((b, T, H, dh)), "k": rng.standard_normal((b, T, H, dh)),
               "v": rng.standard_normal((b, T, H, dh))}
        attrs = {} if base is None else {"rope_base": base}
        out.append(("attn b%d T%d H%d dh%d base%s" % (b, T, H, dh, base or "def"), "causal_attention", inp, attrs,
                    ["y"]))
    return out


def torch_reference(op, inp, attrs, out_grads):
    fn, in_names, diff_names, out_names = spec_ops.RUNNER[op]
    tin = {}
    for n, a in inp.items():
        t = torch.tensor(a)
        if n in diff_names:
            t = t.to(torch.float64).requires_grad_(True)
        tin[n] = t
    kwargs = dict(attrs)
    stats = {}
    if op == "koopman_fit":
        kwargs["stats"] = stats
    outs = fn(**tin, **kwargs)
    if not isinstance(outs, tuple):
        outs = (outs,)
    outs = dict(zip(out_names, outs))
    total = 0
    for n, g in out_grads.items():
        total = total + (outs[n] * torch.tensor(g)).sum()
    grads = {}
    if out_grads:
        diff = [n for n in in_names if n in tin and n in diff_names]
        gs = torch.autograd.grad(total, [tin[n] for n in diff], allow_unused=True)
        for n, g in zip(diff, gs):
            grads[n] = np.zeros(inp[n].shape) if g is None else g.detach().numpy()
    return {n: o.detach().numpy() for n, o in outs.items()}, grads, stats


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--echo-lm", default=default_binary())
    ap.add_argument("--ops", default="", help="comma-separated subset of ops")
    ap.add_argument("--dtypes", default="f64,f32")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", default="", help="directory to keep IN/OUT files in")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    workdir = a.keep or tempfile.mkdtemp(prefix="xcheck_ops_")
    os.makedirs(workdir, exist_ok=True)
    table = Table()
    only = set(filter(None, a.ops.split(",")))
    for i, (label, op, inp, attrs, grad_outs) in enumerate(cases(rng)):
        if only and op not in only:
            continue
        # output gradients need output shapes: run the reference once forward
        ref_out, _, _ = torch_reference(op, inp, attrs, {})
        out_grads = {n: rng.standard_normal(ref_out[n].shape) for n in grad_outs}
        ref_out, ref_grads, stats = torch_reference(op, inp, attrs, out_grads)
        if stats.get("sigma"):
            label += " (max sigma %.3f)" % max(stats["sigma"])
        in_path = os.path.join(workdir, "case%02d_in.h5" % i)
        with h5py.File(in_path, "w") as f:
            for n, v in inp.items():
                f.create_dataset(n, data=v)
            for n, g in out_grads.items():
                f.create_dataset("grad_" + n, data=g)
            for n, v in attrs.items():
                f.attrs[n] = np.int64(v) if isinstance(v, int) else np.float64(v)
        for dt in a.dtypes.split(","):
            out_path = os.path.join(workdir, "case%02d_%s_out.h5" % (i, dt))
            cmd = run_echo(a.echo_lm, ["op", op, "--in", in_path, "--out", out_path, "--dtype", dt])
            tol = TOL[op][0 if dt == "f64" else 1]
            with h5py.File(out_path, "r") as f:
                for n, ref in list(ref_out.items()) + [("grad_" + n, g) for n, g in ref_grads.items()]:
                    if n not in f:
                        table.add(label, dt, n + " (missing)", float("inf"), tol, 0.0)
                        continue
                    table.add(label, dt, n, rel_err(f[n][()], ref), tol, float(np.max(np.abs(ref))))
    table.print()
    print("files in", workdir, "; last command:", cmd)
    fails = table.failures()
    print("%d comparisons, %d failed" % (len(table.rows), len(fails)))
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
