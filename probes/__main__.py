"""Probe trained circuits: curvature, loss landscape, weight trajectory, robustness.

    python -m probes RUN_DIR [RUN_DIR ...] --out DIR [--hessian] [--landscape hessian,random]
        [--trajectory] [--over-training] [--corruptions] [--attacks] [--all] [--examples N]
        [--data-root DIR]

Any run directory of any rule (its checkpoint and config.json; the circuit is rebuilt from
config.json, no code is run). Everything is measured on the run's own data set: the curvature and
landscape on ``--examples`` training images (the first ones, fixed), corruptions and attacks on
as many test images. Writes, per run, DIR/NAME/probes.json and figures, and DIR/probes.md, a
table of every run side by side. Definitions: the modules' docstrings (``probes.curvature``,
``probes.landscape``, ``probes.trajectory``, ``probes.robustness``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from circuits import data as datasets
from circuits.errors import ConfigError

ATTACK_BUDGETS = {"fgsm": [0.0, 0.05, 0.1, 0.2, 0.3], "pgd_linf": [0.0, 0.05, 0.1, 0.2, 0.3],
                  "pgd_l2": [0.0, 0.5, 1.0, 2.0, 3.0]}


def load_run(run_dir: str, data_root: str | None):
    """(config, model in eval mode with the checkpoint's tensors, splits of its data set)."""
    from circuits.run import saved_model

    config, training, _, _, model = saved_model(run_dir, None, False, "probes")
    splits = datasets.load(training.data, data_root or config["data_root"], training.val_size)
    return config, training, model.eval(), splits


def first(split, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys, have = [], [], 0
    for x, y in datasets.batches(split, min(n, 1000)):
        xs.append(x)
        ys.append(y)
        have += len(y)
        if have >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def probe_run(run_dir: str, out: str, args) -> dict:
    from probes import curvature, landscape, robustness, trajectory

    config, training, model, splits = load_run(run_dir, args.data_root)
    result = {"run": os.path.abspath(run_dir), "rule": config["rule"], "seed": config["seed"],
              "data": training.data, "examples": args.examples,
              # curvature scales with the weights (a ReLU layer scaled by c scales the next one's by 1/c):
              # the forward weights' norms put the Hessian numbers of different runs in context
              "weight_norms": {n: float(w.detach().norm()) for n, w in
                               zip([n for n, p in model.projections.items() if p.weight.requires_grad],
                                   curvature.forward_weights(model))}}
    x, y = first(splits["train"], args.examples)
    batches = [(x[i:i + 500], y[i:i + 500]) for i in range(0, len(y), 500)]
    eigenvectors = None
    if args.hessian:
        t = time.time()
        op = curvature.hessian_operator(model, batches)
        values, eigenvectors = curvature.top_eigenpairs(op, k=args.top)
        grid, density = curvature.spectral_density(op, ncv=args.ncv)
        result["hessian"] = {"parameters": int(op.shape[0]), "trace": curvature.hessian_trace(op, args.matvecs),
                             "top_eigenvalues": values.tolist(), "density_grid": grid.tolist(),
                             "density": density.tolist(), "seconds": time.time() - t}
    for kind in args.landscape:
        d1, d2 = landscape.directions(model, kind, batches, eigenvectors=eigenvectors)
        span = np.linspace(-args.span, args.span, args.points)
        result[f"landscape_{kind}"] = landscape.surface(model, batches, d1, d2, span, span)
    if args.trajectory:
        result["trajectory"] = trajectory.trajectory_pca(run_dir)
    if args.over_training:
        t = time.time()
        result["hessian_over_training"] = curvature.over_training(
            model, trajectory.kept_states(run_dir), batches, num_matvecs=args.matvecs, k=args.top,
            where=os.path.join(run_dir, "trajectory"))
        result["hessian_over_training"]["seconds"] = time.time() - t
    if args.corruptions or args.attacks:
        mean, std = datasets.normalisation(training.data)
        tx, ty = first(splits["test"], args.examples)
        if args.corruptions:
            result["corruptions"] = robustness.corruption_accuracy(model, tx, ty, mean, std)
        if args.attacks:
            result["attacks"] = {"budgets": ATTACK_BUDGETS, "steps": args.steps,
                                 "accuracy": robustness.adversarial_accuracy(model, tx, ty, mean, std, ATTACK_BUDGETS,
                                                                              steps=args.steps)}
    os.makedirs(out, exist_ok=True)
    figures(result, out)
    tmp = os.path.join(out, "probes.json.tmp")  # written last and atomically: its presence means "probed"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, os.path.join(out, "probes.json"))
    return result


def figures(result: dict, out: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title = f"{result['rule']} (seed {result['seed']})"
    if "hessian" in result:
        h = result["hessian"]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.semilogy(h["density_grid"], np.maximum(h["density"], 1e-12))
        ax.set(xlabel="Hessian eigenvalue", ylabel="density", title=f"{title}: trace {h['trace']['trace']:.1f}, "
               f"λ_max {h['top_eigenvalues'][0]:.2f}")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "hessian_spectrum.png"), dpi=110)
        plt.close(fig)
    for key in [k for k in result if k.startswith("landscape_")]:
        s = result[key]
        fig, ax = plt.subplots(figsize=(4.5, 3.8))
        cs = ax.contourf(s["alphas"], s["betas"], np.log(np.array(s["loss"])), levels=20)
        fig.colorbar(cs, label="ln loss")
        ax.set(xlabel="α", ylabel="β", title=f"{title}: {key[10:]} directions")
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"{key}.png"), dpi=110)
        plt.close(fig)
    if "trajectory" in result:
        t = result["trajectory"]
        c = np.array(t["coords"])
        ev = t["explained_variance_ratio"]
        fig, ax = plt.subplots(figsize=(4.5, 3.8))
        ax.plot(c[:, 0], c[:, 1], "o-", ms=3)
        for e, (a, b) in zip(t["epochs"], c):
            ax.annotate(str(e), (a, b), fontsize=6)
        ax.set(xlabel=f"PC1 ({100 * ev[0]:.0f}%)", ylabel=f"PC2 ({100 * ev[1]:.0f}%)", title=f"{title}: weight path")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "trajectory.png"), dpi=110)
        plt.close(fig)
    if "hessian_over_training" in result:
        h = result["hessian_over_training"]
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        axes[0].errorbar(h["epochs"], h["trace"], yerr=h["stderr"], fmt="o-", ms=3, capsize=2)
        axes[0].set(xlabel="epoch", ylabel="Hessian trace (Hutchinson)", title=f"{title}: trace over training")
        axes[1].plot(h["epochs"], [v[0] for v in h["top_eigenvalues"]], "o-", ms=3)
        axes[1].set(xlabel="epoch", ylabel="λ_max", title="top eigenvalue over training")
        for ax in axes:
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "hessian_over_training.png"), dpi=110)
        plt.close(fig)
    if "corruptions" in result or "attacks" in result:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for kind, accs in result.get("corruptions", {}).items():
            if kind != "clean":
                axes[0].plot(range(1, 6), [100 * a for a in accs], "o-", ms=3, label=kind)
        axes[0].set(xlabel="severity", ylabel="test accuracy (%)", title=f"{title}: corruptions")
        axes[0].legend(fontsize=6)
        atk = result.get("attacks")
        if atk:
            for kind, accs in atk["accuracy"].items():
                axes[1].plot(atk["budgets"][kind], [100 * a for a in accs], "o-", ms=3, label=kind)
            axes[1].set(xlabel="ε (pixel units; L∞ for fgsm/pgd_linf, L2 for pgd_l2)", ylabel="test accuracy (%)",
                        title="adversarial")
            axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "robustness.png"), dpi=110)
        plt.close(fig)


def table(results: dict) -> str:
    lines = ["| run | rule | Hessian trace | λ_max | clean test accuracy | mean corrupted accuracy | PGD L∞ ε=0.1 |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        h = r.get("hessian", {})
        trace = f"{h['trace']['trace']:.2f} ± {h['trace']['stderr']:.2f}" if h else "—"
        lmax = f"{h['top_eigenvalues'][0]:.3f}" if h else "—"
        c = r.get("corruptions", {})
        clean = f"{100 * c['clean']:.2f}%" if c else "—"
        mean_c = f"{100 * np.mean([np.mean(v) for k, v in c.items() if k != 'clean']):.2f}%" if c else "—"
        a = r.get("attacks")
        pgd = f"{100 * a['accuracy']['pgd_linf'][a['budgets']['pgd_linf'].index(0.1)]:.2f}%" if a else "—"
        lines.append(f"| {name} | {r['rule']} | {trace} | {lmax} | {clean} | {mean_c} | {pgd} |")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m probes", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR")
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-root")
    ap.add_argument("--all", action="store_true", help="every probe")
    ap.add_argument("--hessian", action="store_true", help="trace, top eigenvalues, spectral density")
    ap.add_argument("--landscape", default="", help="comma-separated: hessian, random")
    ap.add_argument("--trajectory", action="store_true", help="PCA of the kept weights (needs keep_every)")
    ap.add_argument("--over-training", action="store_true",
                    help="Hessian trace and top eigenvalues at every kept epoch (needs keep_every)")
    ap.add_argument("--corruptions", action="store_true")
    ap.add_argument("--attacks", action="store_true")
    ap.add_argument("--examples", type=int, default=1000, help="training images for curvature/landscape; test "
                                                              "images for robustness")
    ap.add_argument("--matvecs", type=int, default=100, help="Hutchinson vectors")
    ap.add_argument("--top", type=int, default=2, help="top Hessian eigenvalues")
    ap.add_argument("--ncv", type=int, default=64, help="Lanczos vectors of the spectral density")
    ap.add_argument("--span", type=float, default=1.0, help="landscape: α, β in [-span, span]")
    ap.add_argument("--points", type=int, default=21, help="landscape: points per axis")
    ap.add_argument("--steps", type=int, default=20, help="PGD steps")
    return ap


def parse(argv=None) -> argparse.Namespace:
    """The command line as ``probe_run`` takes it (--all expanded; --landscape as a list)."""
    ap = parser()
    args = ap.parse_args(argv)
    args.landscape = [k for k in args.landscape.split(",") if k]
    if args.all:
        args.hessian = args.corruptions = args.attacks = True
        args.landscape = args.landscape or ["hessian", "random"]
        args.trajectory = args.over_training = all(os.path.isdir(os.path.join(r, "trajectory")) for r in args.runs)
    if not (args.hessian or args.landscape or args.trajectory or args.over_training or args.corruptions
            or args.attacks):
        ap.error("choose probes: --hessian, --landscape, --trajectory, --over-training, --corruptions, --attacks "
                 "or --all")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    results = {}
    try:
        for run in args.runs:
            name = os.path.basename(os.path.normpath(run))
            results[name] = probe_run(run, os.path.join(args.out, name), args)
            print(f"{run}: probed", file=sys.stderr)
    except (ConfigError, ValueError, datasets.DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with open(os.path.join(args.out, "probes.md"), "w") as f:
        f.write("# Probes (python -m probes)\n\n" + table(results) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
