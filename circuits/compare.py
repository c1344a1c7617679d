"""Several rules × seeds side by side: mean ± sd per epoch, a markdown table and a figure."""
from __future__ import annotations

import json
import os
import statistics


def read_metrics(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "metrics.jsonl")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(runs: dict[str, dict[int, str]], key: str = "test_acc") -> dict:
    """{rule: {"epochs": [...], "mean": [...], "sd": [...], "final": [per seed], "seeds": [...]}}
    from {rule: {seed: run_dir}}; epochs that not every seed reached are left out."""
    out = {}
    for rule, by_seed in runs.items():
        curves = {seed: [m[key] for m in read_metrics(d) if key in m] for seed, d in by_seed.items()}
        n = min((len(c) for c in curves.values()), default=0)
        if n == 0:
            continue
        per_epoch = [[c[i] for c in curves.values()] for i in range(n)]
        stats = [_mean_sd(v) for v in per_epoch]
        out[rule] = {"epochs": list(range(1, n + 1)), "mean": [m for m, _ in stats], "sd": [s for _, s in stats],
                     "final": per_epoch[-1], "seeds": list(curves)}
    return out


def write_comparison(out_dir: str, runs: dict[str, dict[int, str]],
                     diverged: dict[str, dict[int, dict]] | None = None) -> str:
    """Write compare.json, compare.md and compare.png in ``out_dir``; returns the markdown.
    ``runs``: {rule: {seed: run_dir}} of the finished runs; ``diverged``: {rule: {seed: {"error",
    "epochs"}}} of runs that diverged, listed in the table and left out of its means."""
    diverged = diverged or {}
    acc = summarize(runs, "test_acc")
    loss = summarize(runs, "train_loss")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "compare.json"), "w") as f:
        json.dump({"test_acc": acc, "train_loss": loss, "runs": runs,
                   "diverged": {r: {str(s): v for s, v in d.items()} for r, d in diverged.items()}}, f, indent=2)
    lines = ["# Comparison", "", "| rule | seeds | epochs | final test accuracy (%) mean ± sd | diverged |",
             "|---|---|---|---|---|"]
    for rule in list(acc) + [r for r in diverged if r not in acc]:
        blown = ", ".join(f"seed {s} after epoch {d['epochs']}" for s, d in sorted(diverged.get(rule, {}).items()))
        if rule not in acc:
            lines.append(f"| {rule} | 0 | — | — | {blown} |")
            continue
        s = acc[rule]
        m, sd = _mean_sd(s["final"])
        lines.append(f"| {rule} | {len(s['seeds'])} | {s['epochs'][-1]} | {100 * m:.2f} ± {100 * sd:.2f} | {blown} |")
    lines += ["", "![test accuracy per epoch](compare.png)", ""]
    text = "\n".join(lines)
    with open(os.path.join(out_dir, "compare.md"), "w") as f:
        f.write(text)
    _figure(acc, loss, os.path.join(out_dir, "compare.png"))
    return text


def _figure(acc: dict, loss: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, data, label in [(axes[0], acc, "test accuracy"), (axes[1], loss, "train loss")]:
        for rule, s in data.items():
            mean, sd = s["mean"], s["sd"]
            ax.plot(s["epochs"], mean, marker="o", ms=3, label=f"{rule} (n={len(s['seeds'])})")
            ax.fill_between(s["epochs"], [m - d for m, d in zip(mean, sd)], [m + d for m, d in zip(mean, sd)], alpha=0.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
