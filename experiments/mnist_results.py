"""Tables and figures of the MNIST reproduction (issue 8) from the runs' raw metrics.

Reads RUNS/RULE-sSEED/metrics.jsonl (as written by ``python -m circuits.run
experiments/mnist_mlp.py --compare ... --out RUNS``), keeps a copy of each run's metrics.jsonl
and config.json under OUT/runs/, and writes OUT/results.json, OUT/results.md (final test
accuracy mean ± sd per rule beside the paper, alignment and norm ratio per layer, wall time per
run), OUT/learning_curves.png and OUT/alignment.png (the paper's Fig. 2: path/weight alignment
and norm ratio per hidden projection against epoch). With no --runs it regenerates everything
from the copies in OUT/runs:

    python experiments/mnist_results.py --runs /tmp/mnist40 --out docs/results/mnist
    python experiments/mnist_results.py --out docs/results/mnist
"""
from __future__ import annotations

import argparse
import json
import os
import re

from circuits.sweep import mean_sd  # mean and sample sd of the finite values

RULES = ("bp", "fa", "dfa", "usf", "brsf", "frsf", "kp", "wm", "pal", "ifa", "pfa", "pfa-o", "pfa-o-square")
IMPLICIT_R = ("pfa", "pfa-o", "pfa-o-square", "pfa-o-nowd")  # runs whose R = WᵀBᵀ + a·E₀ (pfa-o-nowd: lenet_lr_selection.py)
PROJECTIONS = ("h1->h2", "h2->digits")  # the profile's projections (see PROFILES)
PAPER = {"bp": "98.41 best epoch (5 seeds, 98.36–98.45)", "fa": "below BP", "dfa": "below BP", "usf": "≈ BP",
         "brsf": "≈ BP", "frsf": "≈ BP", "pfa": "≈ BP", "pfa-o": "≈ BP", "pfa-o-square": "≈ BP (PFA-o as the code builds it)"}
THEORY = {"pfa": "17.5° (expansion 10), ratio 1.05", "pfa-o": "0°, ratio 1", "pfa-o-square": "0°, ratio 1"}
RUN = re.compile(r"^(?P<rule>[a-z-]+)-s(?P<seed>\d+)$")
# BioTorch's published MNIST LeNet top-1 errors (REFERENCE.md; BioTorch's Benchmarks.md), as accuracies.
# BioTorch keeps the model with the best accuracy on MNIST's 10k held-out images and reports its error
# on those same images, so the number to set beside them is our best-epoch test accuracy.
LENET_PAPER = {rule: f"{100 - float(err):.2f} best epoch (BioTorch: error {err}%)"
               for rule, err in (("bp", "0.91"), ("fa", "1.70"), ("dfa", "1.61"), ("usf", "0.94"), ("brsf", "0.91"),
                                 ("frsf", "0.97"))}
PROFILES = {  # which projections a table and figure show, and the published numbers beside them
    "mlp": {"projections": ("h1->h2", "h2->digits"), "paper": PAPER, "theory": THEORY,
            "title": "MNIST: final results per rule"},
    "lenet": {"projections": ("p1->c2", "p2->c3", "c3->f4", "f4->classes"), "paper": LENET_PAPER, "theory": {},
              "title": "MNIST LeNet-5: final results per rule"},
    "resnet": {"projections": ("stem->s1b0_a", "s1b0_a->s1b0_b", "s1b0->s2b0_a", "s2b0_a->s2b0_b", "s2b0->s3b0_a",
                               "s3b0_a->s3b0_b", "pool->classes"), "paper": {},  # every projection with feedback
               "theory": {}, "title": "MNIST ResNet-8 (zoo.resnet8_mnist): final results per rule",
               "glance": True},  # many projections: a one-line-per-rule table first (glance_table)
}
PER_ROW = 4  # projections side by side in alignment.png; more wrap to further rows


def use_profile(name: str) -> None:
    """Point the table and figures at a circuit's projections and references (module settings)."""
    global PROJECTIONS, PAPER, THEORY
    profile = PROFILES[name]
    PROJECTIONS, PAPER, THEORY = profile["projections"], profile["paper"], profile["theory"]


def read_metrics(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def collect(runs_root: str, epochs: int) -> tuple[dict, list[str]]:
    """{rule: {seed: metrics}} of the finished runs (``epochs`` epochs) and the names of the others."""
    done, unfinished = {}, []
    for name in sorted(os.listdir(runs_root)):
        m = RUN.match(name)
        path = os.path.join(runs_root, name)
        if not m or not os.path.exists(os.path.join(path, "metrics.jsonl")):
            continue
        metrics = read_metrics(path)
        if os.path.exists(os.path.join(path, "diverged.json")):
            unfinished.append(f"{name} (diverged after {len(metrics)} epochs)")
            continue
        if len(metrics) < epochs:
            unfinished.append(f"{name} ({len(metrics)} epochs)")
            continue
        done.setdefault(m["rule"], {})[int(m["seed"])] = metrics[:epochs]
    return done, unfinished


def learning_rates(runs_root: str, done: dict) -> dict[str, list[float]]:
    """{rule: the learning rates its finished runs were trained at} (config.json's training.lr)."""
    rates = {}
    for rule, seeds in done.items():
        for seed in seeds:
            path = os.path.join(runs_root, f"{rule}-s{seed}", "config.json")
            if os.path.exists(path):
                with open(path) as f:
                    rates.setdefault(rule, set()).add(json.load(f)["training"]["lr"])
    return {rule: sorted(v) for rule, v in rates.items()}


def copy_runs(src: str, dst: str) -> None:
    """Copy each RULE-sSEED run's results (config, metrics, epoch-0 record; not its checkpoint)."""
    from circuits.sweep import copy_records

    for name in sorted(os.listdir(src)):
        if RUN.match(name) and os.path.exists(os.path.join(src, name, "metrics.jsonl")):
            copy_records(os.path.join(src, name), os.path.join(dst, name))


def summarize(done: dict) -> dict:
    out = {}
    for rule in [r for r in RULES if r in done] + sorted(set(done) - set(RULES)):
        seeds = done[rule]
        last = [m[-1] for m in seeds.values()]
        row = {"seeds": sorted(seeds), "test_acc": [x["test_acc"] for x in last],
               "best_test_acc": [max(e["test_acc"] for e in m) for m in seeds.values()],
               "wall_minutes": [sum(e.get("seconds", 0.0) for e in m) / 60 for m in seeds.values()]}
        row["test_acc_mean"], row["test_acc_sd"] = mean_sd(row["test_acc"])
        row["best_test_acc_mean"], row["best_test_acc_sd"] = mean_sd(row["best_test_acc"])
        if all("val_acc" in e for m in seeds.values() for e in m):  # the test accuracy at the best validation epoch
            row["val_selected_test_acc"] = [max(m, key=lambda e: e["val_acc"])["test_acc"] for m in seeds.values()]
            row["val_selected_test_acc_mean"], row["val_selected_test_acc_sd"] = mean_sd(row["val_selected_test_acc"])
        for p in PROJECTIONS:
            for key in ("alignment_deg", "norm_ratio", "update_angle_deg"):
                vals = [x.get("projections", {}).get(p, {}).get(key, float("nan")) for x in last]
                row[f"{p} {key}"] = mean_sd(vals)
        out[rule] = row
    return out


def residual_of_R_start(run_dir: str) -> dict:
    """PFA/PFA-o with implicit R (= WᵀBᵀ + a E₀): per projection, dense or conv, a, the path
    alignment and norm ratio as trained and with a set to 0 (R's random start fully decayed,
    Proposition 3's limit), from the run's checkpoint: R B = Wᵀ(BᵀB) + a E₀B, with BᵀB applied
    on W's output channels group by group for a conv projection (``plasticity.pfa``'s own
    path). Empty for other rules."""
    import torch

    from connectomes.analysis import alignment_deg, norm_ratio
    from plasticity.pfa import mix

    state = torch.load(os.path.join(run_dir, "checkpoint.pt"), map_location="cpu", weights_only=True)["model"]
    out = {}
    for p in PROJECTIONS:
        key = f"projections.{p}."
        if key + "E0B" not in state:
            continue
        W, BtB, E0B = (state[key + k].double() for k in ("weight", "BtB", "E0B"))
        a = state[key + "_extra_state"]["a"]
        decayed = mix(BtB, W, W.shape[0] // BtB.shape[1]).transpose(0, 1)  # Wᵀ(BᵀB) in feedback layout
        trained = decayed + a * E0B
        out[p] = {"a": a, "alignment_deg": alignment_deg(W, trained), "norm_ratio": norm_ratio(W, trained),
                  "alignment_deg_a0": alignment_deg(W, decayed), "norm_ratio_a0": norm_ratio(W, decayed)}
    return out


def _fmt(ms: tuple[float, float], spec: str, n: int) -> str:
    """mean ± sd of ``n`` seeds; the value alone for one seed (its sd is not 0 but unknown)."""
    m, s = ms
    return "—" if m != m else (f"{m:{spec}}" if n == 1 else f"{m:{spec}} ± {s:{spec}}")


def table(summary: dict, epochs: int) -> str:
    """The markdown table; a learning-rate column where the rules' rates differ (``row["lr"]``)."""
    bp = summary.get("bp", {}).get("test_acc_mean", float("nan"))
    names = " / ".join(p.replace("->", "→") for p in PROJECTIONS)
    val = any("val_selected_test_acc_mean" in r for r in summary.values())
    rates = {lr for r in summary.values() for lr in r.get("lr", [])}
    lr_column = len(rates) > 1
    lines = [f"| rule | {'lr | ' if lr_column else ''}seeds | final test accuracy (%), {epochs} epochs | vs BP (pp) | best-epoch test accuracy (%) | "
             + ("test accuracy at the best validation epoch (%) | " if val else "")
             + f"paper | alignment {names} (deg) | norm ratio {names} | wall time per run (min) |",
             "|---|---|---|---|---|" + ("---|" if lr_column else "") + ("---|" if val else "") + "---|---|---|---|"]
    for rule, r in summary.items():
        n = len(r["seeds"])
        acc = _fmt((100 * r["test_acc_mean"], 100 * r["test_acc_sd"]), ".2f", n)
        best = _fmt((100 * r["best_test_acc_mean"], 100 * r["best_test_acc_sd"]), ".2f", n)
        diff = "" if rule == "bp" or bp != bp else f"{100 * (r['test_acc_mean'] - bp):+.2f}"
        align = " / ".join(_fmt(r[f"{p} alignment_deg"], ".1f", n) for p in PROJECTIONS)
        ratio = " / ".join(_fmt(r[f"{p} norm_ratio"], ".2f", n) for p in PROJECTIONS)
        paper = PAPER.get(rule, "—") + (f"; theory {THEORY[rule]}" if rule in THEORY else "")
        wall = _fmt(mean_sd(r["wall_minutes"]), ".1f", n)
        chosen = ""
        if val:
            chosen = (_fmt((100 * r["val_selected_test_acc_mean"], 100 * r["val_selected_test_acc_sd"]), ".2f", n) + " | "
                      if "val_selected_test_acc_mean" in r else "— | ")
        lr = (", ".join(f"{v:g}" for v in r.get("lr", [])) or "—") + " | " if lr_column else ""
        lines.append(f"| {rule} | {lr}{len(r['seeds'])} | {acc} | {diff} | {best} | {chosen}{paper} | {align} | {ratio} | {wall} |")
    return "\n".join(lines)


NAMES = {"bp": "BP", "fa": "FA", "dfa": "DFA", "usf": "uSF", "brsf": "brSF", "frsf": "frSF", "kp": "KP", "wm": "WM",
         "pal": "PAL", "ifa": "IFA", "pfa": "PFA", "pfa-o": "PFA-o", "pfa-o-square": "PFA-o (square B)"}


def glance_table(summary: dict) -> str:
    """One line per rule for a circuit with many projections: accuracy, and each alignment as its
    range (min–max of the seed means) over every projection but the last (the hidden ones), the
    last (the readout) alone; docs/results/mnist_resnet/README.md shows a copy (the docs test
    checks it). The header says "conv": the one profile using it (resnet) has conv hidden layers."""
    *hidden, readout = PROJECTIONS

    def span(r: dict, key: str) -> str:
        means = [r[f"{p} {key}"][0] for p in hidden]
        means = [m for m in means if m == m]
        return f"{min(means):.1f}–{max(means):.1f}" if means else "—"

    lines = ["| rule | lr | seeds | final (%) | best epoch (%) | ∠(Wᵀ, B) conv, min–max (deg) | ∠(Wᵀ, B) readout (deg) | "
             "∠(ΔW_rule, ΔW_BP) conv, min–max (deg) | training per run (min) |", "|---|---|---|---|---|---|---|---|---|"]
    for rule, r in summary.items():
        n = len(r["seeds"])
        lines.append(f"| {NAMES.get(rule, rule)} | {', '.join(f'{v:g}' for v in r.get('lr', [])) or '—'} | {n} | "
                     f"{_fmt((100 * r['test_acc_mean'], 100 * r['test_acc_sd']), '.2f', n)} | "
                     f"{_fmt((100 * r['best_test_acc_mean'], 100 * r['best_test_acc_sd']), '.2f', n)} | "
                     f"{span(r, 'alignment_deg')} | {_fmt(r[f'{readout} alignment_deg'], '.1f', 1)} | "
                     f"{span(r, 'update_angle_deg')} | {_fmt(mean_sd(r['wall_minutes']), '.1f', 1)} |")
    return "\n".join(lines)


def update_table(summary: dict) -> str:
    """The angle between each rule's ΔW and BP's gradient at the end (deg), per projection: the
    one alignment every rule has (DFA's B reaches a conv projection from the readout, so it has
    no weight alignment there). Empty where no run recorded it."""
    key = " update_angle_deg"
    if not any(r[p + key][0] == r[p + key][0] for r in summary.values() for p in PROJECTIONS):  # all nan
        return ""
    names = " / ".join(p.replace("->", "→") for p in PROJECTIONS)
    lines = ["The weight change's angle to BP's: ∠(ΔW_rule, ΔW_BP), the rule's ΔW against the exact gradient of the "
             "same loss on the same batch (the probe batch: the training set's first batch, at the last epoch's weights), mean ± sd over "
             "the seeds" + (" (the value alone for a rule with one seed)" if any(len(r["seeds"]) == 1 for r in summary.values())
                            else "") + "; 0 where the rule's error is BP's" + (" (PAL's W changes by δ (x + ξ)ᵀ, the noisy rate its "
                                                             "synapses saw, so its readout's ΔW is not BP's either)"
                                                             if "pal" in summary else "") + ".", "",
             f"| rule | ∠(ΔW_rule, ΔW_BP) {names} (deg) |", "|---|---|"]
    for rule, r in summary.items():
        lines.append(f"| {rule} | " + " / ".join(_fmt(r[p + key], ".1f", len(r["seeds"])) for p in PROJECTIONS) + " |")
    return "\n".join(lines)


def initial_records(runs_root: str, done: dict, cache_path: str) -> dict:
    """{rule: {seed: epoch-0 record}}: each run's initial.json, or, for runs made before it was
    written, the alignment and norm ratio of the circuit rebuilt from its config.json and compiled
    with its seed (the same draw training started from; no accuracy). Rebuilt records are kept in
    ``cache_path`` so that a page regenerates without rebuilding."""
    from circuits.rebuild import rebuild

    cache = {}
    if os.path.exists(cache_path):
        with open(cache_path) as f:
            cache = json.load(f)
    out, changed = {}, False
    for rule, seeds in done.items():
        for seed in seeds:
            name = f"{rule}-s{seed}"
            path = os.path.join(runs_root, name)
            if os.path.exists(os.path.join(path, "initial.json")):
                with open(os.path.join(path, "initial.json")) as f:
                    out.setdefault(rule, {})[seed] = json.load(f)
                continue
            if name not in cache:
                if not os.path.exists(os.path.join(path, "config.json")):
                    continue  # nothing to rebuild from: its curves start at epoch 1
                with open(os.path.join(path, "config.json")) as f:
                    config = json.load(f)
                model = rebuild(config["circuit"]).compile(seed=config["seed"])
                cache[name] = {"epoch": 0, "projections": model.alignment(), "source": "rebuilt from config.json"}
                changed = True
            out.setdefault(rule, {})[seed] = cache[name]
    if changed:
        with open(cache_path, "w") as f:
            json.dump(dict(sorted(cache.items())), f, indent=1)
    return out


def _curves(done: dict, get, initial: dict | None = None) -> dict:
    """{rule: (epochs, mean, sd)} of get(epoch_metrics) over seeds; from epoch 0 where every
    seed's epoch-0 record (``initial``) has the value."""
    out = {}
    for rule, seeds in done.items():
        n = min(len(m) for m in seeds.values())
        per_epoch = [[get(m[i]) for m in seeds.values()] for i in range(n)]
        x = list(range(1, n + 1))
        first = [get(initial.get(rule, {}).get(seed, {})) for seed in seeds] if initial else []
        if first and all(v == v for v in first):
            per_epoch, x = [first, *per_epoch], [0, *x]
        stats = [mean_sd(v) for v in per_epoch]
        out[rule] = (x, [s[0] for s in stats], [s[1] for s in stats])
    return out


def figures(done: dict, out: str, initial: dict | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = [r for r in RULES if r in done] + sorted(set(done) - set(RULES))
    colors = {r: plt.cm.tab20(i / max(1, len(rules) - 1)) for i, r in enumerate(rules)}

    def band(ax, curves, scale=1.0):
        for rule in rules:
            if rule not in curves:
                continue
            x, m, s = curves[rule]
            if all(v != v for v in m):
                continue
            m = [scale * v for v in m]
            s = [scale * v for v in s]
            ax.plot(x, m, color=colors[rule], lw=1.3, label=f"{rule} (n={len(done[rule])})")
            ax.fill_between(x, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)], color=colors[rule], alpha=0.2)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    band(axes[0], _curves(done, lambda e: e.get("test_acc", float("nan")), initial), 100)
    axes[0].set_ylim(96, 99)
    axes[0].set_ylabel("test accuracy (%)")
    band(axes[1], _curves(done, lambda e: e["train_loss"]))
    axes[1].set_yscale("log")
    axes[1].set_ylabel("training loss")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "learning_curves.png"), dpi=120)
    plt.close(fig)

    # one column per projection, at most PER_ROW side by side: alignment above norm ratio
    cols = min(len(PROJECTIONS), PER_ROW)
    blocks = -(-len(PROJECTIONS) // PER_ROW)
    fig, axes = plt.subplots(2 * blocks, cols, figsize=(5.5 * cols, 7 * blocks), sharex=True, squeeze=False)
    place = [(2 * (i // PER_ROW), i % PER_ROW) for i in range(blocks * cols)]  # (alignment row, column)
    for top, col in place[len(PROJECTIONS):]:  # the last row's empty places
        axes[top, col].set_visible(False)
        axes[top + 1, col].set_visible(False)
    for p, (top, col) in zip(PROJECTIONS, place):
        for row, key in enumerate(("alignment_deg", "norm_ratio")):
            ax = axes[top + row, col]
            band(ax, _curves(done, lambda e: e.get("projections", {}).get(p, {}).get(key, float("nan")), initial))
            ax.set_title(f"{p}: {'path/weight alignment (deg)' if row == 0 else 'norm ratio'}", fontsize=9)
            ax.grid(alpha=0.3)
        if "pfa" in THEORY:
            axes[top, col].axhline(17.5, color="gray", ls="--", lw=0.8)
        axes[top + 1, col].axhline(1.0, color="gray", ls="--", lw=0.8)
        axes[top + 1, col].set_xlabel("epoch (0: at initialisation)")
        axes[top + 1, col].xaxis.set_tick_params(labelbottom=True)
    handles = {}  # every rule's line, from whichever panel has it (DFA has no conv alignment to draw)
    for ax in axes.flat:
        for line, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, line)
    axes[0, 0].legend(list(handles.values()), list(handles), fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "alignment.png"), dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", help="folder of RULE-sSEED run directories to take metrics from")
    ap.add_argument("--out", default=os.path.join("docs", "results", "mnist"))
    ap.add_argument("--epochs", type=int, default=40, help="runs with fewer epochs count as unfinished")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="mlp",
                    help="which circuit's projections and published numbers (mlp: the PFA paper's MLP; lenet: "
                         "BioTorch's; resnet: experiments/mnist_resnet.py's, no published numbers)")
    args = ap.parse_args(argv)
    use_profile(args.profile)
    runs = os.path.join(args.out, "runs")
    if args.runs:
        copy_runs(args.runs, runs)
    done, unfinished = collect(runs, args.epochs)
    summary = summarize(done)
    for rule, lrs in learning_rates(runs, done).items():
        summary[rule]["lr"] = lrs
    residual_path = os.path.join(args.out, "residual.json")
    residual = {}
    if os.path.exists(residual_path):  # earlier runs' residuals stay: their checkpoints may be gone
        with open(residual_path) as f:
            residual = json.load(f)
    if args.runs:  # checkpoints are only in the original run directories
        for name in sorted(os.listdir(args.runs)):
            ckpt = os.path.join(args.runs, name, "checkpoint.pt")
            if RUN.match(name) and RUN.match(name)["rule"] in IMPLICIT_R and os.path.exists(ckpt):
                residual[name] = residual_of_R_start(os.path.join(args.runs, name))
        residual = dict(sorted(residual.items()))
        with open(residual_path, "w") as f:
            json.dump(residual, f, indent=2)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"epochs": args.epochs, "rules": summary, "unfinished": unfinished}, f, indent=2)
    text = table(summary, args.epochs)
    if PROFILES[args.profile].get("glance"):
        text = ("At a glance (each alignment's range over the conv projections, the readout alone; the tables "
                "below give every projection):\n\n" + glance_table(summary) + "\n\n" + text)
    updates = update_table(summary)
    if updates:
        text += "\n\n" + updates
    if residual:
        text += ("\n\nWhat is left of R's random start (a·E₀ of R = WᵀBᵀ + a·E₀) at the end, per run: path "
                 "alignment (deg) and norm ratio as trained → with a = 0\n\n| run | projection | a | alignment | norm ratio |\n"
                 "|---|---|---|---|---|\n" + "\n".join(
                     f"| {run} | {p} | {r['a']:.4f} | {r['alignment_deg']:.2f} → {r['alignment_deg_a0']:.2f} | "
                     f"{r['norm_ratio']:.3f} → {r['norm_ratio_a0']:.3f} |"
                     for run, rows in residual.items() for p, r in rows.items()))
    if unfinished:
        text += "\n\nUnfinished runs (left out): " + ", ".join(unfinished)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(f"# {PROFILES[args.profile]['title']} (generated by experiments/mnist_results.py)\n\n" + text + "\n\n"
                "![learning curves](learning_curves.png)\n\n![alignment and norm ratio](alignment.png)\n")
    figures(done, args.out, initial_records(runs, done, os.path.join(args.out, "initial.json")))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
