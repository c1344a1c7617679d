"""Time the connectome analysis: pair statistics of a dense 2000 × 2000 pair and a 10-draw motif
census of 2000 cells (issue targets: ≤ 2 s and ≤ 10 s on the 2-core development machine).

    python benchmarks/connectome_stats.py [--cells 2000] [--repeats 3] [--out benchmarks/results]

Writes ``connectome_stats.json`` and ``connectome_stats.md`` (median of ``--repeats`` timings,
the machine, torch/numpy threads and the commit). Nothing is asserted: the numbers are recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time

import numpy as np
import torch

from connectomes.motifs import cell_graph, motif_census
from connectomes.reciprocity import bootstrap_intervals, pair_block, pair_statistics


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def layered(cells: int, seed: int = 0) -> list[dict]:
    """A 4-population layered circuit of ``cells`` cells (40/25/25/10%), forward density 0.3,
    feedback 0.2 on the hidden projections: the report's kind of graph."""
    rng = np.random.default_rng(seed)
    sizes = [("x", int(0.4 * cells)), ("h1", int(0.25 * cells)), ("h2", int(0.25 * cells))]
    sizes.append(("y", cells - sum(n for _, n in sizes)))
    recs = []
    for (a, na), (b, nb) in zip(sizes, sizes[1:]):
        W = torch.tensor(np.where(rng.random((nb, na)) < 0.3, rng.normal(size=(nb, na)), 0.0))
        recs.append({"name": f"{a}->{b}", "kind": "forward", "pre": a, "post": b, "weight": W})
        if a != "x":
            F = torch.tensor(np.where(rng.random((na, nb)) < 0.2, rng.normal(size=(na, nb)), 0.0))
            recs.append({"name": f"{a}->{b}:B", "kind": "feedback", "pre": b, "post": a, "weight": F,
                         "forward": f"{a}->{b}"})
    return recs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=os.path.join("benchmarks", "results"))
    args = ap.parse_args(argv)
    n = args.cells
    rng = np.random.default_rng(0)
    W, F = torch.tensor(rng.normal(size=(n, n))), torch.tensor(rng.normal(size=(n, n)))
    random_graph = rng.random((n, n)) < 0.1
    layered_graph = cell_graph(layered(n))
    block = pair_block(W, F, 0.0, None, None, 0.116, "W", "F", "a", "b")
    cases = {
        f"pair_statistics, dense {n}×{n} (W and F)": lambda: pair_statistics(W, F),
        f"pair_statistics, matched density 0.116, {n}×{n}": lambda: pair_statistics(W, F, density=0.116),
        f"bootstrap, 200 resamples, matched 0.116, {n}×{n}": lambda: bootstrap_intervals([block], repeats=200),
        f"motif census, {n} cells (random, p = 0.1), 10 null draws over all pairs":
            lambda: motif_census(random_graph, repeats=10, null="all"),
        f"motif census, {n} cells (layered circuit), 10 null draws over feasible pairs":
            lambda: motif_census(layered_graph, repeats=10),
    }
    rows = []
    for name, fn in cases.items():
        fn()  # warm up (BLAS threads, caches)
        times = _time(fn, args.repeats)
        rows.append({"case": name, "median_s": statistics.median(times), "times_s": times})
        print(f"{name}: {statistics.median(times):.2f} s (of {', '.join(f'{t:.2f}' for t in times)})", flush=True)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    meta = {"commit": commit, "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
            "numpy": np.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"), "repeats": args.repeats}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "connectome_stats.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    lines = ["# Connectome analysis speed", "",
             f"`python benchmarks/connectome_stats.py` at {commit}: {meta['machine']}, numpy {meta['numpy']}, "
             f"OMP_NUM_THREADS={meta['OMP_NUM_THREADS']}; median of {args.repeats} after one warm-up. "
             "Targets (issue 19): pair statistics of a dense 2000 × 2000 pair ≤ 2 s, a 10-draw motif census "
             "of 2000 cells ≤ 10 s (before: 17–22 s and about 40 s).", "",
             "| case | median (s) | runs (s) |", "|---|---|---|"]
    lines += [f"| {r['case']} | {r['median_s']:.2f} | {', '.join(f'{t:.2f}' for t in r['times_s'])} |" for r in rows]
    with open(os.path.join(args.out, "connectome_stats.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
