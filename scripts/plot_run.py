#!/usr/bin/env python3
"""Draw a training run's loss and held-out accuracy (or validation loss) curves from DIR/metrics.jsonl.

    python3 scripts/plot_run.py RUN_DIR [--out RUN_DIR/curves.png]

Reads the records `echo-lm train` writes: step records ({"step", "loss", ...})
and eval records ({"step", "eval": true, "accuracy": {task: acc}, "detail": ...}).
The accuracy panel also draws each task's chance levels (uniform guess and the
informed guess among the context's values) as dashed lines. For a run on token
files (`--data`) the eval records carry `val_loss` and `val_bpb` or
`val_bits_per_token` instead, and the second panel draws those bits per byte
(or per token) against the training loss converted to the same unit.
"""
import argparse
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--out", default=None, help="PNG to write (default RUN_DIR/curves.png)")
    args = ap.parse_args()
    path = os.path.join(args.run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        sys.exit(f"plot_run.py: {path} not found")
    steps, losses, evals = [], [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                sys.exit(f"plot_run.py: {path}:{n}: not JSON")
            if rec.get("eval"):
                evals.append(rec)
            elif "loss" in rec and "summary" not in rec:
                steps.append(rec["step"])
                losses.append(rec["loss"])
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_run.py: matplotlib is missing (Debian: apt-get install python3-matplotlib)")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(steps, losses, lw=1)
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss (cross-entropy)")
    ax1.set_yscale("log")
    ax1.grid(alpha=0.3)
    text = [e for e in evals if "val_loss" in e]
    if text:
        unit = "val_bpb" if "val_bpb" in text[0] else "val_bits_per_token"
        ln2 = 0.6931471805599453
        ax2.plot(steps, [l / ln2 for l in losses], lw=1, alpha=0.6, label="training (bits)")
        ax2.plot([e["step"] for e in text], [e[unit] for e in text], marker="o", label="validation")
        ax2.set_xlabel("step")
        ax2.set_ylabel("bits per byte" if unit == "val_bpb" else "bits per token")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)
        evals = []
    tasks = sorted({t for e in evals for t in e["accuracy"]})
    for i, task in enumerate(tasks):
        xs = [e["step"] for e in evals if task in e["accuracy"]]
        ys = [e["accuracy"][task] for e in evals if task in e["accuracy"]]
        line, = ax2.plot(xs, ys, marker="o", label=task)
        detail = next((e["detail"][task] for e in evals if task in e.get("detail", {})), None)
        if detail:
            ax2.axhline(detail["chance_uniform"], ls=":", color=line.get_color(), lw=1)
            ax2.axhline(detail["chance_informed"], ls="--", color=line.get_color(), lw=1)
    if not text:
        ax2.set_ylim(0, 1.02)
        ax2.set_xlabel("step")
        ax2.set_ylabel("held-out accuracy")
        ax2.set_title("dotted: uniform guess, dashed: informed guess", fontsize=9)
        if tasks:
            ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)
    fig.suptitle(os.path.basename(os.path.abspath(args.run_dir)))
    fig.tight_layout()
    out = args.out or os.path.join(args.run_dir, "curves.png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
