#!/usr/bin/env python3
"""Tables and plots of a grid run by scripts/mqar_grid.sh.

    /usr/bin/python3 scripts/plot_grid.py results/NAME

Reads results/NAME/cells/*.json (one per finished cell; each records its exact training
command) and scripts/grids/NAME.sh (the cell list, so cells without a result are listed as
"not run yet") and writes
  table.csv   one row per (cell, eval task): accuracy, per-slot accuracy, chance levels;
  table.md    the same as markdown, chance levels beside every number;
  heatmap.png for MQAR cells evaluated on their own training task: accuracy per M × gap,
              one panel per model label (cells not run yet are grey);
  curves.png  learning curves of cells trained with --eval-every, and curves_by_task.png
              the same with one panel per training task (line style = training seed);
  table.md also gets, for cells with learning curves, the first step at which held-out
              accuracy reached 0.5 and 0.9, where and why training stopped, and its time;
  length.png  when a cell is evaluated on one task family at several lengths (T or gap):
              accuracy against the eval length, one line per cell (length_by_task.png: one
              panel per training task);
  tasks.png   when cells are evaluated on several task families: accuracy per cell × task.
"""
import csv
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def parse_spec(spec):
    """'mqar:M=8,gap=64' -> ('mqar', {'M': '8', 'gap': '64'})."""
    name, _, rest = spec.partition(":")
    params = {}
    for kv in filter(None, rest.split(",")):
        k, _, v = kv.partition("=")
        params[k] = v
    return name, params


def grid_cells(results):
    """(id, label, train args, eval tasks) of every cell the grid file declares, in order."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "grids", os.path.basename(results.rstrip("/")) + ".sh")
    cells = []
    if not os.path.exists(path):
        return cells
    pat = re.compile(r'^\s*cell\s+(\S+)\s+(\S+)\s+"([^"]*)"\s+"([^"]*)"')
    text = open(path).read()
    # Expand the simple loops of the grid files by asking bash for the list.
    import subprocess

    script = ('IDS=(); cell() { printf "cell %s %s \\"%s\\" \\"%s\\"\\n" "$1" "$2" "$3" "$4"; }; '
              'source "$0"')
    try:
        out = subprocess.run(["bash", "-c", script, path], capture_output=True, text=True, check=True).stdout
        text = out
    except Exception:
        pass
    for line in text.splitlines():
        m = pat.match(line)
        if m:
            cells.append(m.groups())
    return cells


def fmt(x):
    return "%.3f" % x


def main():
    results = sys.argv[1].rstrip("/")
    name = os.path.basename(results)
    cells_dir = os.path.join(results, "cells")
    done = {}
    for f in sorted(os.listdir(cells_dir)) if os.path.isdir(cells_dir) else []:
        if f.endswith(".json") and not f.startswith("."):
            r = json.load(open(os.path.join(cells_dir, f)))
            done[r["id"]] = r
    declared = grid_cells(results)
    order = [c[0] for c in declared] + sorted(set(done) - {c[0] for c in declared})
    info = {c[0]: c for c in declared}

    rows = []
    for cid in order:
        if cid in done:
            r = done[cid]
            train_tasks = r.get("train_tasks") or []
            for e in r["eval"]:
                rows.append({
                    "cell": cid, "label": r["label"], "train_tasks": " ".join(train_tasks),
                    # steps trained: the budget, or where the cell stopped early
                    "steps": r.get("final_step", r["steps"]), "train_seed": r.get("train_seed"),
                    "eval_seed": r["eval_seed"],
                    "eval_task": e["task"], "in_distribution": e["task"] in train_tasks,
                    "accuracy": e["accuracy"], "per_slot": " ".join(fmt(p) for p in e["per_slot"]),
                    "chance_uniform": e["chance_uniform"], "chance_informed": e["chance_informed"],
                    "examples": e["examples"], "train_seconds": round(r["train_seconds"], 1), "status": "done"})
        else:
            c = info[cid]
            for spec in c[3].split():
                rows.append({"cell": cid, "label": c[1], "train_tasks": "", "steps": "", "train_seed": "",
                             "eval_seed": "", "eval_task": spec, "in_distribution": "", "accuracy": "",
                             "per_slot": "", "chance_uniform": "", "chance_informed": "", "examples": "",
                             "train_seconds": "", "status": "not run yet"})

    fields = ["cell", "label", "train_tasks", "steps", "train_seed", "eval_seed", "eval_task", "in_distribution",
              "accuracy", "per_slot", "chance_uniform", "chance_informed", "examples", "train_seconds", "status"]
    with open(os.path.join(results, "table.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)

    with open(os.path.join(results, "table.md"), "w") as f:
        f.write("# Grid `%s`\n\nHeld-out accuracy (fresh eval seed) per cell and eval task; per-slot accuracy "
                "in query order; chance levels beside every number (uniform guess / informed guess: a model "
                "that knows the answer format but binds nothing). Generated by scripts/plot_grid.py from "
                "cells/*.json.\n\n" % name)
        f.write("| cell | model | steps | eval task | accuracy | per slot | chance unif. | chance inf. "
                "| train s | s/step |\n")
        f.write("|---|---|---:|---|---:|---|---:|---:|---:|---:|\n")
        for r in rows:
            if r["status"] == "done":
                f.write("| %s | %s | %s | %s | **%s** | %s | %s | %s | %s | %.2f |\n" % (
                    r["cell"], r["label"], r["steps"], r["eval_task"], fmt(r["accuracy"]), r["per_slot"],
                    fmt(r["chance_uniform"]), fmt(r["chance_informed"]), r["train_seconds"],
                    r["train_seconds"] / r["steps"]))
            else:
                f.write("| %s | %s | | %s | not run yet | | | | | |\n" % (r["cell"], r["label"], r["eval_task"]))
        families = {parse_spec(r["eval_task"])[0] for r in rows}
        if len(families) >= 3:
            f.write("\nMean over the eval tasks (only cells with every eval task done):\n\n"
                    "| cell | model | mean accuracy | mean informed guess |\n|---|---|---:|---:|\n")
            for cid in order:
                rs = [r for r in rows if r["cell"] == cid]
                if all(r["status"] == "done" for r in rs):
                    f.write("| %s | %s | **%.3f** | %.3f |\n" % (
                        cid, rs[0]["label"], np.mean([r["accuracy"] for r in rs]),
                        np.mean([r["chance_informed"] for r in rs])))
                else:
                    f.write("| %s | %s | not run yet | |\n" % (cid, rs[0]["label"]))
        total = sum(r["train_seconds"] for r in done.values())
        f.write("\n%d of %d cells done; training time of the done cells %.0f s (%.2f h, one thread each).\n" % (
            len(done), len(order), total, total / 3600))

    curves = {cid: r["curve"] for cid, r in done.items() if len(r.get("curve") or []) >= 2}
    if curves:
        with open(os.path.join(results, "table.md"), "a") as f:
            f.write("\nLearning curves (the trainer's periodic held-out evals, its own eval seed):\n\n")
            for cid, curve in curves.items():
                f.write("- %s: %s\n" % (cid, ", ".join(
                    "%d: %s" % (c["step"], "/".join("%.3f" % a for a in c["accuracy"].values())) for c in curve)))
        fig, ax = plt.subplots(figsize=(6, 4))
        for cid, curve in curves.items():
            ax.plot([c["step"] for c in curve], [np.mean(list(c["accuracy"].values())) for c in curve],
                    marker=".", label=cid)
        save_accuracy_plot(fig, ax, "step", os.path.join(results, "curves.png"))
        write_convergence(results, done, curves)
        plot_curves_by_task(results, done, curves)
    plot_heatmap(results, rows)
    plot_length(results, rows)
    plot_tasks(results, rows)


def first_step_reaching(curve, level):
    """First step whose held-out accuracy (worst over the tasks) is >= level, or None."""
    for c in curve:
        if min(c["accuracy"].values()) >= level:
            return c["step"]
    return None


def write_convergence(results, done, curves):
    """Sample efficiency and cost of the cells with learning curves, appended to table.md."""
    with open(os.path.join(results, "table.md"), "a") as f:
        f.write("\nConvergence (the trainer's periodic held-out evals; \"-\" = not reached within the run):\n\n"
                "| cell | model | train task | seed | first step >= 0.5 | first step >= 0.9 | final step "
                "| stopped | train s | s/step |\n|---|---|---|---:|---:|---:|---:|---|---:|---:|\n")
        for cid, curve in curves.items():
            r = done[cid]
            final = r.get("final_step", r["steps"])
            stop = "early (>= 0.99 three times)" if r.get("stopped_early") else "at the step budget"
            reach = [first_step_reaching(curve, lv) for lv in (0.5, 0.9)]
            f.write("| %s | %s | %s | %s | %s | %s | %d | %s | %.0f | %.2f |\n" % (
                cid, r["label"], " ".join(r.get("train_tasks") or []), r.get("train_seed"),
                *["-" if x is None else str(x) for x in reach], final, stop, r["train_seconds"],
                r["train_seconds"] / max(final, 1)))


SEED_STYLES = ["-", "--", ":", "-."]


def label_colours(labels):
    """One colour per model label, the same in every plot of a grid (labels sorted)."""
    return {l: "C%d" % i for i, l in enumerate(sorted(set(labels)))}


def plot_curves_by_task(results, done, curves):
    """Learning curves, one panel per training task, one colour per model label."""
    tasks = sorted({" ".join(done[c].get("train_tasks") or []) for c in curves},
                   key=lambda t: [int(v) if v.isdigit() else v for v in re.split(r"(\d+)", t)])
    colours = label_colours(done[c]["label"] for c in curves)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.6), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        for cid, curve in curves.items():
            r = done[cid]
            if " ".join(r.get("train_tasks") or []) != task:
                continue
            seed = r.get("train_seed") or 1
            ax.plot([c["step"] for c in curve], [min(c["accuracy"].values()) for c in curve],
                    SEED_STYLES[(seed - 1) % len(SEED_STYLES)], color=colours[r["label"]], marker=".", markersize=3,
                    label="%s (seed %s)" % (r["label"], seed))
        ax.set_title(task, fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("held-out accuracy")
    fig.savefig(os.path.join(results, "curves_by_task.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)


def save_accuracy_plot(fig, ax, xlabel, path):
    """Accuracy on [0, 1] against xlabel, with a legend; writes path and closes fig."""
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("held-out accuracy")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_heatmap(results, rows):
    """MQAR cells on their own training task: accuracy per M x gap, one panel per label."""
    cells = {}
    for r in rows:
        name, p = parse_spec(r["eval_task"])
        if name != "mqar" or "M" not in p or "gap" not in p or p.get("reveal", "0") != "0":
            continue
        if r["status"] == "done" and not r["in_distribution"]:
            continue
        key = (int(p["M"]), int(p["gap"]))
        cells.setdefault(r["label"], {})[key] = r["accuracy"] if r["status"] == "done" else None
    if not cells:
        return
    labels = list(cells)
    Ms = sorted({k[0] for c in cells.values() for k in c})
    gaps = sorted({k[1] for c in cells.values() for k in c})
    if len(Ms) * len(gaps) < 2:
        return
    fig, axes = plt.subplots(1, len(labels), figsize=(3.4 * len(labels) + 1, 3.2), squeeze=False,
                             gridspec_kw={"wspace": 0.35})
    cmap = matplotlib.colormaps["viridis"].copy()
    cmap.set_bad("lightgrey")
    for ax, label in zip(axes[0], labels):
        a = np.full((len(Ms), len(gaps)), np.nan)
        for (M, g), acc in cells[label].items():
            if acc is not None:
                a[Ms.index(M), gaps.index(g)] = acc
        im = ax.imshow(np.ma.masked_invalid(a), vmin=0, vmax=1, cmap=cmap, origin="lower")
        for i in range(len(Ms)):
            for j in range(len(gaps)):
                txt = "n/r" if np.isnan(a[i, j]) else "%.2f" % a[i, j]
                ax.text(j, i, txt, ha="center", va="center", fontsize=8,
                        color="black" if np.isnan(a[i, j]) or a[i, j] > 0.6 else "white")
        ax.set_xticks(range(len(gaps)), [str(g) for g in gaps])
        ax.set_yticks(range(len(Ms)), [str(m) for m in Ms])
        ax.set_xlabel("gap")
        ax.set_ylabel("M")
        ax.set_title(label, fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="held-out accuracy")
    fig.suptitle("MQAR accuracy (n/r = not run yet)", fontsize=10)
    fig.savefig(os.path.join(results, "heatmap.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_length(results, rows):
    """Cells evaluated on one task family at several lengths: accuracy against length."""
    series = {}
    for r in rows:
        if r["status"] != "done":
            continue
        name, p = parse_spec(r["eval_task"])
        length = p.get("T") or p.get("gap")
        if length is None:
            continue
        series.setdefault((r["cell"], r["label"], name), []).append((int(length), r["accuracy"], r["chance_informed"]))
    series = {k: sorted(v) for k, v in series.items() if len(v) >= 3}
    if not series:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for (cid, label, name), pts in series.items():
        x = [p[0] for p in pts]
        ax.plot(x, [p[1] for p in pts], marker="o", label="%s (%s)" % (label, cid))
    first = next(iter(series.values()))
    ax.plot([p[0] for p in first], [p[2] for p in first], "k:", label="informed guess")
    ax.set_xscale("log", base=2)
    save_accuracy_plot(fig, ax, "eval length (T or gap)", os.path.join(results, "length.png"))
    # One panel per training task: the cells trained on the same data side by side.
    train_task = {r["cell"]: r["train_tasks"] for r in rows if r["status"] == "done"}
    tasks = sorted({train_task[k[0]] for k in series}, key=lambda t: [int(v) if v.isdigit() else v for v in re.split(r"(\d+)", t)])
    if len(tasks) < 2:
        return
    colours = label_colours(k[1] for k in series)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.6), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        chance = None
        for (cid, label, name), pts in series.items():
            if train_task[cid] != task:
                continue
            seed = re.search(r"-s(\d+)$", cid)
            seed_style = SEED_STYLES[(int(seed.group(1)) - 1) % len(SEED_STYLES)] if seed else "-"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], seed_style, marker="o", markersize=3,
                    color=colours[label], label="%s (%s)" % (label, cid))
            chance = pts
        if chance:
            ax.plot([p[0] for p in chance], [p[2] for p in chance], "k:", label="informed guess")
        ax.set_xscale("log", base=2)
        ax.set_title("trained on " + task, fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("eval length (T or gap)")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("held-out accuracy")
    fig.savefig(os.path.join(results, "length_by_task.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_tasks(results, rows):
    """Cells evaluated on several task families: accuracy per cell x task."""
    done = [r for r in rows if r["status"] == "done"]
    families = sorted({parse_spec(r["eval_task"])[0] for r in done})
    if len(families) < 3:
        return
    tasks = list(dict.fromkeys(r["eval_task"] for r in done))
    cells = list(dict.fromkeys((r["cell"], r["label"]) for r in done))
    a = np.full((len(cells), len(tasks)), np.nan)
    for r in done:
        a[cells.index((r["cell"], r["label"])), tasks.index(r["eval_task"])] = r["accuracy"]
    fig, ax = plt.subplots(figsize=(1.3 * len(tasks) + 2, 0.6 * len(cells) + 1.5))
    ax.imshow(a, vmin=0, vmax=1, cmap="viridis")
    for i in range(len(cells)):
        for j in range(len(tasks)):
            if not np.isnan(a[i, j]):
                ax.text(j, i, "%.2f" % a[i, j], ha="center", va="center", fontsize=8,
                        color="black" if a[i, j] > 0.6 else "white")
    ax.set_xticks(range(len(tasks)), tasks, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(len(cells)), [c[1] for c in cells], fontsize=8)
    fig.savefig(os.path.join(results, "tasks.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
