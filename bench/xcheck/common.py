"""Shared helpers of the cross-check scripts: running echo-lm, relative errors, tables."""
import os
import subprocess
import sys


def run_echo(binary, args):
    cmd = [binary] + args
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("command failed (%d): %s\n%s%s" % (p.returncode, " ".join(cmd), p.stdout, p.stderr))
    return " ".join(cmd)


def rel_err(a, b):
    """max|a-b| / max|b| (absolute error when b is all zero)."""
    import numpy as np
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    d = float(np.max(np.abs(a - b)))
    m = float(np.max(np.abs(b)))
    return d / m if m > 0 else d


class Table:
    def __init__(self):
        self.rows = []

    def add(self, case, dtype, name, err, tol, ref_max):
        self.rows.append((case, dtype, name, err, tol, ref_max, err <= tol))

    def print(self, out=sys.stdout):
        w = max([len(r[0]) for r in self.rows] + [4])
        n = max([len(r[2]) for r in self.rows] + [7])
        print("%-*s  %-4s  %-*s  %10s  %8s  %10s  %s" % (w, "case", "dt", n, "dataset", "max rel", "tol", "max|ref|",
                                                         "ok"), file=out)
        for case, dt, name, err, tol, ref_max, ok in self.rows:
            print("%-*s  %-4s  %-*s  %10.2e  %8.0e  %10.3e  %s" % (w, case, dt, n, name, err, tol, ref_max,
                                                                  "ok" if ok else "FAIL"), file=out)

    def failures(self):
        return [r for r in self.rows if not r[6]]


def default_binary():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "..", "build", "echo-lm")
