"""Cross-check of the model runner (spec §6.1): echo-lm forward vs the PyTorch model in spec_model.py.

Per case: `echo-lm init (--model PRESET | --config FILE) --seed 1 --out CK.h5`; optionally every
parameter perturbed (the initialisation zeroes w_o, w_beta, ..., which would hide gradients);
random tokens/targets (some -100) [+ mask] -> IN.h5; `echo-lm forward --checkpoint CK.h5 --tokens
IN.h5 --out OUT.h5 --dtype f64`; logits, loss and every grad/<path> compared with torch autograd
(max|engine-torch| / max|torch|, tolerance 1e-9).

    /usr/bin/python3 bench/xcheck/check_model.py [--echo-lm build/echo-lm] [--cases a,b] [--keep DIR]
"""
import argparse
import json
import os
import sys
import tempfile

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Table, default_binary, rel_err, run_echo  # noqa: E402
from spec_model import SpecLM, load_checkpoint  # noqa: E402

torch.set_default_dtype(torch.float64)
REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def preset(name):
    with open(os.path.join(REPO, "configs", name + ".json")) as f:
        return json.load(f)


def variant(base, **changes):
    cfg = preset(base)
    for key, val in changes.items():
        if "." in key:
            sec, k = key.split(".")
            cfg[sec][k] = val
        else:
            cfg[key] = val
    return cfg


# name -> (preset name or config dict, uses mask)
CASES = {
    "ska-1m": ("ska-1m", False),
    "ssm-1m": ("ssm-1m", False),
    "attn-1m": ("attn-1m", False),
    "ska-1m-prefix": (variant("ska-1m", **{"ska.mode": "prefix"}), True),
    "ska-1m-koopman-mlp": (variant("ska-1m", mlp="koopman", d_ff=0), False),
    "ska-1m-kmlp-wgate-power": (variant("ska-1m", mlp="koopman", d_ff=0, **{"ska.write_gate": True,
                                                                              "ska.filter": "power",
                                                                              "ska.chunk_size": 32}), False),
    "ssm-1m-g2": (variant("ssm-1m", **{"mamba.ngroups": 2, "mamba.chunk_size": 32, "mamba.d_conv": 3}), False),
}


def perturb(ck_path, rng):
    """Adds noise to every parameter in place (float32 stays float32)."""
    with h5py.File(ck_path, "r+") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                a = obj[()].astype(np.float64)
                scale = 0.5 / np.sqrt(a.shape[1]) if a.ndim == 2 else 0.1
                obj[...] = (a + scale * rng.standard_normal(a.shape)).astype(obj.dtype)
        f["model"].visititems(visit)


def run_case(name, spec, use_mask, perturbed, a, rng, workdir, table):
    ck = os.path.join(workdir, "%s%s_ck.h5" % (name, "_pert" if perturbed else ""))
    if isinstance(spec, str):
        run_echo(a.echo_lm, ["init", "--model", spec, "--seed", "1", "--out", ck])
    else:
        cfg_path = os.path.join(workdir, name + ".json")
        with open(cfg_path, "w") as f:
            json.dump(spec, f)
        run_echo(a.echo_lm, ["init", "--config", cfg_path, "--seed", "1", "--out", ck])
    if perturbed:
        perturb(ck, rng)
    cfg, params = load_checkpoint(ck)
    V = cfg["vocab_size"]
    b, T = a.batch, a.T
    tokens = rng.integers(0, V, (b, T)).astype(np.int32)
    targets = rng.integers(0, V, (b, T)).astype(np.int32)
    targets[rng.random((b, T)) < 0.15] = -100
    mask = None
    if use_mask:
        mask = np.zeros((b, T), dtype=np.int32)
        for i in range(b):
            mask[i, :rng.integers(T // 2, T - 10)] = 1
    in_path = os.path.join(workdir, name + "_in.h5")
    with h5py.File(in_path, "w") as f:
        f.create_dataset("tokens", data=tokens)
        f.create_dataset("targets", data=targets)
        if mask is not None:
            f.create_dataset("mask", data=mask)
    out_path = os.path.join(workdir, "%s%s_out.h5" % (name, "_pert" if perturbed else ""))
    cmd = run_echo(a.echo_lm, ["forward", "--checkpoint", ck, "--tokens", in_path, "--out", out_path,
                               "--dtype", "f64"])
    model = SpecLM(cfg, params)
    logits = model.forward(torch.tensor(tokens), None if mask is None else torch.tensor(mask))
    loss = model.loss(logits, torch.tensor(targets))
    loss.backward()
    label = name + (" perturbed" if perturbed else " init")
    tol = a.tol
    with h5py.File(out_path, "r") as f:
        ref = logits.detach().numpy()
        table.add(label, "f64", "logits", rel_err(f["logits"][()], ref), tol, float(np.abs(ref).max()))
        table.add(label, "f64", "loss", rel_err(np.asarray(f["loss"][()]).reshape(-1)[0], loss.item()), tol,
                  abs(loss.item()))
        gnames = []
        f["grad"].visititems(lambda n, o: gnames.append(n) if isinstance(o, h5py.Dataset) else None)
        missing = set(params) - {g.replace("/", ".") for g in gnames}
        for m in sorted(missing):
            table.add(label, "f64", "grad/" + m + " (missing)", float("inf"), tol, 0.0)
        worst = ("", 0.0, 0.0)
        for g in sorted(gnames):
            p = params[g.replace("/", ".")]
            refg = np.zeros(p.shape) if p.grad is None else p.grad.numpy()
            e = rel_err(f["grad/" + g][()], refg)
            m = float(np.abs(refg).max())
            if a.all_grads:
                table.add(label, "f64", "grad/" + g, e, tol, m)
            if e >= worst[1]:
                worst = (g, e, m)
        if not a.all_grads:
            table.add(label, "f64", "grad (worst of %d: %s)" % (len(gnames), worst[0]), worst[1], tol, worst[2])
    return cmd


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--echo-lm", default=default_binary())
    ap.add_argument("--cases", default="", help="comma-separated subset of: " + ", ".join(CASES))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--T", type=int, default=150)
    ap.add_argument("--tol", type=float, default=1e-9)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-init", action="store_true", help="skip the unperturbed checkpoints")
    ap.add_argument("--all-grads", action="store_true", help="one row per parameter gradient")
    ap.add_argument("--keep", default="")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    workdir = a.keep or tempfile.mkdtemp(prefix="xcheck_model_")
    os.makedirs(workdir, exist_ok=True)
    table = Table()
    only = list(filter(None, a.cases.split(","))) or list(CASES)
    cmd = ""
    for name in only:
        spec, use_mask = CASES[name]
        for perturbed in ([True] if a.no_init else [False, True]):
            cmd = run_case(name, spec, use_mask, perturbed, a, rng, workdir, table)
    table.print()
    print("files in", workdir, "; last command:", cmd)
    fails = table.failures()
    print("%d comparisons, %d failed" % (len(table.rows), len(fails)))
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
