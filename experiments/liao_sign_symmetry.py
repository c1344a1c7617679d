"""Liao, Leibo & Poggio (2016), "How Important is Weight Symmetry in Backpropagation?", on MNIST:
BP, FA and the sign-concordant rules (raw and scaled uSF, brSF, frSF) × {plain SGD, Batch
Manhattan (BM), batch norm (BN), BN + BM} on the 784-512-512-10 MLP and a deeper one (six
hidden layers of 256), and a sign-concordance sweep q = 0, 0.25, 0.5, 0.75, 0.9, 1. LeNet-5
(``--depths lenet``: zoo.lenet, BN on its three convolutions and its dense hidden layer) is the
same study on a conv circuit, opt-in for its cost.

Protocol, one for every arm (experiments/liao_mlp.py; Liao et al.'s own MNIST settings were not
reachable from here, so this project's MNIST protocol is used): ReLU, batch 64, 20 epochs, SGD
momentum 0.9, no weight decay, a constant learning rate; 10,000 training cells held out for
validation (val_size). Each arm (depth, rule, condition) trains once (the first seed) per
learning rate of its grid, lr ∈ {0.1, 0.01, 0.001, 0.0001} for SGD and {3e-3, 1e-3, 1e-4, 1e-5, 1e-6}
for BM (BM's step is lr per synapse whatever the gradient; the grid was widened from {1e-3, 1e-4,
1e-5} when BP's first choices fell on both of its edges, before any other seed had run); the rate with the best final validation
accuracy is kept (selection on validation only; a run that diverges is never kept), and the
other seeds train at that rate. Where that best rate is an end of the grid (or every rate
diverged), the arm's grid grows a decade at a time beyond that end, up to two decades
(``--bracket``; added 2026-12-03, when raw uSF on six layers chose the grid's lowest rate with
accuracy still rising towards it), so that every arm is judged at a rate its own grid brackets. The test accuracy reported is the final epoch's, mean ± sd over
the seeds. BN: every hidden layer batch-normalises its summed input before the ReLU (zoo.mlp
norm="batch"). BM: Training batch_manhattan (manhattan_sign "gradient": sign of the batch
gradient, then momentum). The concordance sweep runs raw uSF, brSF and frSF on the 2-hidden-layer
MLP under one condition (default BN + BM, ``--concordance-condition``) at the rate chosen for
q = 1 (that arm's grid cell), every seed.

Each run trains in WORK/CELL-sSEED (an interrupted sweep resumes; a diverged run is recorded with
diverged.json and not trained again) and its records are copied to OUT/runs/CELL-sSEED; the page
(liao.md, liao.json and figures: accuracy per arm, accuracy against concordance, ‖e‖ per layer
over training) is written from those copies, so ``--report-only`` regenerates it. The page opens
with the four claims, each with its test (stated per claim: a difference by Welch's t-test over
the seeds, Holm-corrected for the number of cases the claim tests, "equal" or "not below" by the difference's 90% Welch interval within ±0.2 pp, below
the BP − FA gap of the MNIST table), the numbers it rests on and a verdict computed from them
(``claims``): supported, not supported, or undecided where three seeds can show neither.

    python experiments/liao_sign_symmetry.py --data-root ../shared/data --seeds 0,1,2 \\
        --work runs/liao --out docs/results/liao
    python experiments/liao_sign_symmetry.py --seeds 0,1,2 --report-only
"""
from __future__ import annotations

import math
import os
import statistics
import sys

from circuits import zoo
from circuits.sweep import (Cell, compare, diverged, holm, mean_sd, read_initial, run_cells_from_args, run_name, seeds_of, sweep_parser,
                            training_note, write_report)
from plasticity import make_rule

HERE = os.path.dirname(os.path.abspath(__file__))
FILE = os.path.join(HERE, "liao_mlp.py")
# arm name -> (rule name, options)
RULES = {"bp": ("bp", {}), "fa": ("fa", {}), "usf-raw": ("usf", {"scale": "none"}), "usf": ("usf", {}),
         "brsf": ("brsf", {}), "frsf": ("frsf", {})}
CONDITIONS = {"sgd": (False, None), "bm": (True, None), "bn": (False, "batch"), "bn+bm": (True, "batch")}
DEPTHS = {"mlp2": (784, 512, 512, 10), "mlp6": (784, *[256] * 6, 10)}  # the default circuits (layer sizes)
CONV = {"lenet": 4}  # opt-in circuits (--depths lenet: zoo.lenet, BN on c1, c2, c3, f4) -> hidden layers with W
LR_GRID = {False: (0.1, 0.01, 0.001, 0.0001), True: (3e-3, 1e-3, 1e-4, 1e-5, 1e-6)}
CONCORDANCE = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
CONCORDANCE_RULES = ("usf-raw", "brsf", "frsf")
NOT_CONVERGED = 2.0  # an arm whose first seed's final training loss exceeds this × its lowest is flagged "not converged"


def hidden_layers(depth: str) -> int:
    return CONV[depth] if depth in CONV else len(DEPTHS[depth]) - 2


def arm(depth: str, rule: str, condition: str) -> str:
    return f"{depth}-{rule}-{condition}"


def cell(depth: str, rule: str, condition: str, lr: float, q: float = 1.0) -> tuple[str, Cell]:
    """("DEPTH-RULE[-qQ]-CONDITION-lrLR", its Cell): the rule (with concordance q), the circuit
    (zoo.mlp of DEPTH, or zoo.lenet for "lenet"; batch-normalised for BN conditions) and the settings (lr, batch_manhattan)."""
    name, options = RULES[rule]
    bm, norm = CONDITIONS[condition]
    options = {**options, **({"concordance": q} if q != 1 else {})}
    circuit_name = f"liao-{depth}" + ("-bn" if norm else "")
    circuit = (zoo.lenet(name=circuit_name, norm=norm) if depth in CONV
               else zoo.mlp(DEPTHS[depth], name=circuit_name, norm=norm))
    label = f"{depth}-{rule}" + (f"-q{q:g}" if q != 1 else "") + f"-{condition}-lr{lr:g}"
    return label, Cell(make_rule(name, **options), sets={"lr": lr, "batch_manhattan": bm}, circuit=circuit)


def final_value(history: list[dict], key: str) -> float:
    return history[-1].get(key, float("nan")) if history else float("nan")


BRACKET = 2  # decades an arm's grid may grow beyond an end where its best rate lies (see select)


def beyond(lr: float, decades: int) -> float:
    """``lr`` × 10^decades, rounded to 3 significant digits (so 1e-4 / 10 is 1e-05 exactly)."""
    return float(f"{lr * 10.0 ** decades:.3g}")


def select(histories: dict, arms: list[tuple], grid: dict, seed: int, bracket: int = BRACKET) -> dict:
    """{arm: (chosen lr or None, {lr: final val acc, nan if diverged or missing}, [lrs not run
    yet])} from the first seed's grid runs: the best final validation accuracy (never a diverged
    run), chosen only once the arm's whole grid has run (a shard that finishes first must not
    choose from part of it).

    Bracketing: where the best rate of a complete grid is its lowest (or every rate diverged) the
    arm's grid grows by the rate a decade below, where it is its highest by the rate a decade
    above, up to ``bracket`` decades beyond the original grid on each side; the arm is chosen
    once its best rate lies inside its grid or the bracket is used up. So a rule whose errors are
    10⁵ times BP's (raw sign feedback on six layers) is not judged at a rate the grid forced on it.
    Selection stays on validation."""
    chosen = {}
    for depth, rule, condition in arms:
        base = grid[CONDITIONS[condition][0]]
        rates = list(base)
        while True:
            scores, missing = {}, []
            for lr in sorted(rates, reverse=True):
                h = histories.get(cell(depth, rule, condition, lr)[0], {}).get(seed)
                if not h:
                    missing.append(lr)
                scores[lr] = float("nan") if not h or h[-1].get("diverged") else final_value(h, "val_acc")
            finite = {lr: v for lr, v in scores.items() if v == v}
            if missing:
                break
            best = max(finite, key=finite.get) if finite else None
            if (best is None or best == min(rates)) and min(rates) > beyond(min(base), -bracket):
                rates.append(beyond(min(rates), -1))
            elif best is not None and best == max(rates) and max(rates) < beyond(max(base), bracket):
                rates.append(beyond(max(rates), 1))
            else:
                break
        best = max(finite, key=finite.get) if finite and not missing else None
        chosen[arm(depth, rule, condition)] = (best, scores, missing)
    return chosen


def mark_diverged(histories: dict, out: str) -> dict:
    """The histories with {"diverged": True} appended to each run that diverged (diverged.json)."""
    for label, runs in histories.items():
        for seed, h in runs.items():
            if diverged(os.path.join(out, "runs", run_name(label, seed))) is not None:
                runs[seed] = [*h, {"diverged": True}]
    return histories


def first_seed(histories: dict, label: str) -> list | None:
    """The records of a cell's first seed (None if it never ran)."""
    runs = histories.get(label, {})
    return runs[min(runs)] if runs else None


def epochs_run(history: list | None) -> int:
    return len([m for m in history or [] if "epoch" in m])


def error_norms(history: list | None, label: str, histories: dict, out: str) -> list[dict]:
    """‖e‖ per population per epoch of a cell's first seed, from epoch 0 (initial.json)."""
    if not history:
        return []
    first = min(histories[label])
    initial = read_initial(os.path.join(out, "runs", run_name(label, first))) or {}
    return [initial.get("error_norms", {})] + [m.get("error_norms", {}) for m in history if "epoch" in m]


def summarize(histories: dict, chosen: dict, arms: list[tuple], seeds, qs, q_condition: str, out: str,
              grid: dict | None = None) -> dict:
    """The page's data: one row per arm (its chosen rate, validation accuracy, test accuracy over
    the seeds, ‖e‖ per population per epoch of the first seed from epoch 0) and the concordance
    sweep's rows."""
    def stats(label):
        runs = histories.get(label, {})
        done = {s: h for s, h in runs.items()}
        accs = [float("nan") if h and h[-1].get("diverged") else final_value(h, "test_acc") for h in done.values()]
        acc, sd = mean_sd(accs)
        return {"cell": label, "seeds": sorted(done), "diverged": sum(1 for h in done.values() if h and h[-1].get("diverged")),
                "test_acc": acc, "test_acc_sd": sd, "test_acc_per_seed": accs,
                "epochs": min((len([m for m in h if "epoch" in m]) for h in done.values()), default=0),
                "seconds": statistics.fmean([sum(m.get("seconds", 0.0) for m in h) for h in done.values()]) if done else 0.0}

    rows = []
    for depth, rule, condition in arms:
        lr, scores, missing = chosen[arm(depth, rule, condition)]
        row = {"depth": depth, "rule": rule, "condition": condition, "lr": lr,
               "val_acc_by_lr": {f"{k:g}": v for k, v in scores.items()}, "grid_missing": missing,
               "grid_grown": [k for k in scores if grid is not None and k not in grid[CONDITIONS[condition][0]]]}
        if lr is not None:
            label, _ = cell(depth, rule, condition, lr)
            row.update(stats(label))
            row["val_acc"] = scores[lr]
            h = first_seed(histories, label)
            row["error_norms"] = error_norms(h, label, histories, out)
            losses = [m["train_loss"] for m in h or [] if "epoch" in m and "train_loss" in m]
            if losses:  # does the first seed converge? (the lowest training loss, its epoch, the last)
                k = min(range(len(losses)), key=losses.__getitem__)
                row["train_loss_lowest"], row["train_loss_lowest_epoch"], row["train_loss_final"] = losses[k], k + 1, losses[-1]
        elif scores and not missing:
            # every rate diverged: keep the error norms of the grid run that lasted longest (the
            # smallest rate on a tie) up to its divergence, so the page shows what blew up
            lasted = lambda v: (epochs_run(first_seed(histories, cell(depth, rule, condition, v)[0])), -v)  # noqa: E731
            v = max(scores, key=lasted)
            label, _ = cell(depth, rule, condition, v)
            h = first_seed(histories, label)
            row.update({"diverged_lr": v, "diverged_after": epochs_run(h),
                        "error_norms": error_norms(h, label, histories, out)})
        rows.append(row)
    concordance = []
    for rule in CONCORDANCE_RULES:
        lr = chosen.get(arm("mlp2", rule, q_condition), (None, {}))[0]
        if lr is None:
            continue
        for q in qs:
            label, _ = cell("mlp2", rule, q_condition, lr, q)
            if histories.get(label):
                concordance.append({"rule": rule, "q": q, "lr": lr, "condition": q_condition, **stats(label)})
    return {"rows": rows, "concordance": concordance, "seeds": list(seeds)}


READOUT = "classes"  # the readout population of zoo.mlp and zoo.lenet
CHANCE = 0.1  # a diverged seed's accuracy in the claims' comparisons (10 classes)
MAGNITUDES = {"usf-raw": "unit", "usf": "unit × Glorot scale (BioTorch)", "brsf": "batchwise random", "frsf": "fixed random"}
NORMALISED = ("bm", "bn", "bn+bm")
SIGN_RULES = ("usf-raw", "usf", "brsf", "frsf")


def seed_accs(row: dict) -> list[float]:
    """A row's final test accuracy per seed, a diverged seed at chance; [] if the arm never ran."""
    if row is None or row.get("lr") is None:
        return []
    return [CHANCE if a != a else a for a in row["test_acc_per_seed"]]


MARGIN = 0.2  # pp of test accuracy: "equal" means within ±MARGIN (below the BP − FA gap, 0.27 pp, of the MNIST table)
UNDECIDED = "undecided"


def equal(c: dict) -> bool | str | None:
    """Equivalence within ±MARGIN: True when the 90% interval lies inside it (even if the t-test
    finds a smaller difference), False when the t-test finds a difference, else UNDECIDED (three
    seeds cannot tell); None when not testable."""
    if c["order"] == "?":
        return None
    if -MARGIN < c["lo"] and c["hi"] < MARGIN:
        return True
    return False if c["order"] != "≈" else UNDECIDED


def not_below(c: dict) -> bool | str | None:
    """Non-inferiority: True when the 90% interval's lower end is above −MARGIN or a is
    significantly above b, False when significantly below, else UNDECIDED; None when not testable."""
    if c["order"] == "?":
        return None
    if c["lo"] > -MARGIN or c["order"] == ">":
        return True
    return False if c["order"] == "<" else UNDECIDED


def below(c: dict) -> bool | str | None:
    """a ends below b: True when significantly below, False when significantly above or equal
    within ±MARGIN, else UNDECIDED; None when not testable."""
    if c["order"] == "?":
        return None
    if c["order"] == "<":
        return True
    return False if (c["order"] == ">" or equal(c) is True) else UNDECIDED


def interval(c: dict) -> str:
    if c["order"] == "?":
        return f"{c['diff']:+.2f} pp (fewer than two seeds on a side: no test yet)"
    holm_p = f", Holm p = {c['p_holm']:.2g}" if "p_holm" in c else ""
    return f"{c['diff']:+.2f} pp, 90% interval [{c['lo']:+.2f}, {c['hi']:+.2f}], p = {c['p']:.2g}{holm_p}"


def reverse(c: dict) -> dict:
    """The comparison b − a of a comparison a − b (same p)."""
    flip = {"<": ">", ">": "<"}
    return {**c, "diff": -c["diff"], "lo": -c["hi"], "hi": -c["lo"], "order": flip.get(c["order"], c["order"])}


def holm_family(cs: list[dict]) -> list[dict]:
    """The comparisons of one claim (one per circuit × condition cell, rule or case) with Holm's
    correction for their number: each testable one gets ``p_holm`` and its order ('<', '>', '≈')
    from it, so a claim's "significantly different" calls keep a 5% chance of any false one
    across its cases. Equivalence and non-inferiority (the 90% interval inside the margin) stay
    per case: a claim is "supported" only when every case passes, an intersection-union test,
    valid at 5% without correction."""
    tested = [c for c in cs if c["order"] != "?"]
    out = {id(c): c for c in cs}
    for c, p in zip(tested, holm([c["p"] for c in tested])):
        out[id(c)] = {**c, "p_holm": p, "order": "≈" if p >= 0.05 else (">" if c["diff"] > 0 else "<")}
    return [out[id(c)] for c in cs]


def tally(verdicts: list, what: str) -> str:
    """'supported' / 'not supported' / 'undecided' / 'partly supported (k of n …)' over the tested
    cases (True, False or UNDECIDED; None: not testable from the runs so far)."""
    tested = [v for v in verdicts if v is not None]
    if not tested:
        return "not tested yet (no comparison with two seeds on each side)"
    k, no = sum(v is True for v in tested), sum(v is False for v in tested)
    open_ = len(tested) - k - no
    if k == len(tested):
        return f"supported ({k} of {k} {what})"
    if open_ == len(tested):
        return f"undecided ({open_} {what}: the seeds neither show a difference nor bound it within ±{MARGIN} pp)"
    undecided = f", {open_} undecided" if open_ else ""
    if k == 0:
        return f"not supported (0 of {len(tested)} {what}{undecided})"
    return f"partly supported ({k} of {len(tested)} {what}; {no} not supported{undecided})"


def claims(result: dict) -> list[dict]:
    """Liao et al.'s four claims against the sweep's rows: [{"claim", "test", "evidence": [str],
    "verdict"}]. Every comparison is Welch's t-test over the seeds' final test accuracies at 5%
    (a diverged seed counts at chance), stated in "test"."""
    rows = {(r["depth"], r["rule"], r["condition"]): r for r in result["rows"]}
    depths = list(dict.fromkeys(r["depth"] for r in result["rows"]))
    conditions = list(dict.fromkeys(r["condition"] for r in result["rows"]))
    pct = lambda accs: f"{100 * sum(accs) / len(accs):.2f}" if accs else "—"  # noqa: E731
    out = []

    # (1) magnitudes do not matter: the sign rules that differ only in magnitude, per depth and condition
    cells = []
    for depth in depths:
        for condition in conditions:
            arms = {rule: seed_accs(rows.get((depth, rule, condition))) for rule in SIGN_RULES}
            arms = {rule: a for rule, a in arms.items() if a}
            if len(arms) < 2:
                continue
            best, worst = max(arms, key=lambda r: sum(arms[r]) / len(arms[r])), min(arms, key=lambda r: sum(arms[r]) / len(arms[r]))
            cells.append((depth, condition, arms, compare(arms[best], arms[worst])))
    evidence, verdicts = [], []
    for (depth, condition, arms, _), c in zip(cells, holm_family([cell[3] for cell in cells])):
        verdict, control = equal(c), ""
        if CONDITIONS[condition][0] and "usf-raw" in arms and "usf" in arms:
            # under BM raw and scaled uSF are one update: their difference is the protocol's own spread
            # (not corrected: a control that differs makes the cell undecided, so it errs that way)
            lrs = [rows[(depth, r, condition)]["lr"] for r in ("usf-raw", "usf")]
            c0 = compare(arms["usf-raw"], arms["usf"])
            control = (f"; control: usf-raw − usf (one update under BM; lr {lrs[0]:g} vs {lrs[1]:g}) {interval(c0)}")
            if c0["order"] in ("<", ">") and verdict is not None:
                verdict, control = UNDECIDED, control + " (one rule differs from itself: this cell cannot decide)"
        verdicts.append(verdict)
        evidence.append(f"{depth}, {condition}: " + ", ".join(f"{r} {pct(a)}" for r, a in arms.items())
                        + f"; best − worst {interval(c)}{control}")
    out.append({"claim": "(1) the feedback's magnitudes do not matter",
                "test": "per circuit and condition, the best and the worst of the sign rules that differ only in "
                        "magnitude (" + ", ".join(f"{r}: {m}" for r, m in MAGNITUDES.items()) + ") are equal "
                        f"within ±{MARGIN} pp (their difference's 90% interval inside it: two one-sided tests at 5%); "
                        "a significant difference (Welch, Holm p < 0.05 over the cells) outside it refutes. Under Batch Manhattan (bm, "
                        "bn+bm) raw and scaled uSF are one update (the sign of a gradient ignores the positive "
                        "per-layer factor between their feedback; tests/test_liao.py), so their difference there is "
                        "a control, the spread of this protocol (rate chosen on one seed, BM at a constant rate) "
                        "between two runs of one rule: a cell whose control differs significantly (Welch, p < 0.05) "
                        "counts as undecided",
                "evidence": evidence, "verdict": tally(verdicts, "circuit × condition cells")})

    # (2) the more concordant the signs, the better: accuracy rises with q
    from scipy.stats import spearmanr

    cases = []
    for rule in dict.fromkeys(c["rule"] for c in result["concordance"]):
        mine = sorted((c for c in result["concordance"] if c["rule"] == rule), key=lambda c: c["q"])
        accs = {c["q"]: [CHANCE if a != a else a for a in c["test_acc_per_seed"]] for c in mine}
        if len(accs) < 3 or 1.0 not in accs or 0.5 not in accs:
            continue
        means = [sum(a) / len(a) for a in accs.values()]
        rho = float(spearmanr(list(accs), means).statistic) if len(set(means)) > 1 else 0.0  # flat: no rise
        cases.append((rule, mine, accs, rho, compare(accs[1.0], accs[0.5])))
    evidence, verdicts = [], []
    for (rule, mine, accs, rho, _), c in zip(cases, holm_family([case[4] for case in cases])):
        rises = below(reverse(c))  # sign-random feedback q = 0.5 below q = 1
        verdicts.append(rises if rises is None or rho >= 0.8 else False)  # no rise with q refutes
        evidence.append(f"{rule} ({mine[0]['condition']}): " + ", ".join(f"q={q:g} {pct(a)}" for q, a in accs.items())
                        + f"; Spearman ρ(q, accuracy) = {rho:.2f}; q=1 − q=0.5 {interval(c)}")
    out.append({"claim": "(2) the signs matter: the more concordant, the better",
                "test": "per rule, accuracy rises with the concordance q (Spearman ρ ≥ 0.8 over the q values) and "
                        "q = 1 beats sign-random feedback q = 0.5 (Welch, Holm p < 0.05 over the rules); ρ < 0.8, q = 1 significantly below, "
                        f"or the two equal within ±{MARGIN} pp refutes",
                "evidence": evidence, "verdict": tally(verdicts, "rules")})

    # (3) random magnitudes, 100% concordant signs: as good as or better than plain SGD (BP)
    cases = []
    for depth in depths:
        bp = seed_accs(rows.get((depth, "bp", "sgd")))
        for rule in ("brsf", "frsf"):
            ran = [rows[(depth, rule, cond)] for cond in conditions if rows.get((depth, rule, cond), {}).get("lr") is not None]
            if not bp or not ran:
                continue
            chosen = max(ran, key=lambda r: r["val_acc"])  # the condition chosen on validation (first seed)
            cases.append((depth, rule, chosen, bp, compare(seed_accs(chosen), bp)))
    evidence, verdicts = [], []
    for (depth, rule, chosen, bp, _), c in zip(cases, holm_family([case[4] for case in cases])):
        verdicts.append(not_below(c))
        evidence.append(f"{depth}: {rule} under {chosen['condition']} (chosen on validation) {pct(seed_accs(chosen))} "
                        f"vs BP under plain SGD {pct(bp)}: {interval(c)}")
    out.append({"claim": "(3) random magnitudes with 100% concordant signs match or beat plain SGD",
                "test": "per circuit, brSF and frSF under the condition with the best validation accuracy are not "
                        f"below BP under plain SGD: the 90% interval of the difference ends above −{MARGIN} pp "
                        "(non-inferiority, one-sided 5%) or the rule is significantly above; significantly below "
                        "refutes (significance: Welch, Holm p < 0.05 over the cases)",
                "evidence": evidence, "verdict": tally(verdicts, "circuit × rule cases")})

    # (4) sign feedback needs BM and/or BN: plain SGD is worse than the best normalised condition
    cases = []
    for depth in depths:
        for rule in ("usf-raw", "brsf", "frsf"):
            plain = rows.get((depth, rule, "sgd"))
            normalised = [rows[(depth, rule, cond)] for cond in NORMALISED
                          if rows.get((depth, rule, cond), {}).get("lr") is not None]
            if plain is None or plain.get("grid_missing") or not normalised:
                continue  # plain SGD's grid not complete: nothing to compare yet
            chosen = max(normalised, key=lambda r: r["val_acc"])
            a = seed_accs(plain) or [CHANCE] * len(chosen["test_acc_per_seed"])  # every rate diverged: failed
            cases.append((depth, rule, plain, chosen, a, compare(a, seed_accs(chosen))))
    evidence, verdicts = [], []
    for (depth, rule, plain, chosen, a, _), c in zip(cases, holm_family([case[5] for case in cases])):
        verdicts.append(below(c))
        growth = error_growth(plain)
        evidence.append(f"{depth}, {rule}: plain SGD {pct(a)}"
                        + (f" (every rate diverged; ‖e‖ below from lr {plain['diverged_lr']:g}, which lasted "
                           f"{plain['diverged_after']} epochs)" if plain.get("lr") is None else "")
                        + f" vs {chosen['condition']} {pct(seed_accs(chosen))}: {interval(c)}"
                        + (f"; ‖e‖ first / last hidden layer under plain SGD: {growth[0]:.3g} at epoch 0, "
                           f"{growth[1]:.3g} at the end" if growth else ""))
    out.append({"claim": "(4) sign feedback needs Batch Manhattan and/or batch norm",
                "test": "per circuit and sign rule (raw uSF, brSF, frSF), plain SGD ends below the best of BM, BN, BN + "
                        f"BM (chosen on validation; Welch, Holm p < 0.05 over the cases; equal within ±{MARGIN} pp or significantly above "
                        "refutes; an arm whose every rate diverged counts at chance); the "
                        "error norms say whether errors explode (ratio ≫ 1) or vanish (≪ 1) towards the input",
                "evidence": evidence, "verdict": tally(verdicts, "circuit × rule cases")})
    return out


def hidden_populations(norms: dict) -> list[str]:
    """The populations of an ``error_norms`` record but the readout, in the circuit's order (input
    side first: h1 … hN of an MLP; c1, p1, c2, p2, c3, f4 of LeNet)."""
    return [k for k in norms if k != READOUT]


def error_growth(row: dict) -> tuple[float, float] | None:
    """‖e‖ at the first hidden population over ‖e‖ at the last, at epoch 0 and at the last epoch
    recorded (the first seed), or None without error norms."""
    norms = [m for m in row.get("error_norms") or [] if m]
    if not norms:
        return None
    hidden = hidden_populations(norms[0])
    if len(hidden) < 2:
        return None
    ratio = lambda m: m.get(hidden[0], math.nan) / m.get(hidden[-1], math.nan)  # noqa: E731
    return ratio(norms[0]), ratio(norms[-1])


def claims_lines(found: list[dict]) -> list[str]:
    """The claims as markdown: a heading per claim with its test, evidence and verdict."""
    lines = ["## The four claims", "",
             "Each verdict follows from the runs below by the test stated with it, on the seeds' final test "
             "accuracies (a diverged seed counts at chance, 10%): a difference is shown by Welch's t-test at 5% "
             "after Holm's correction for the number of cases the claim tests (each case shows p and Holm p); "
             f"\"equal\" and \"not below\" are shown by the difference's 90% Welch interval lying within ±{MARGIN} pp "
             f"(or above −{MARGIN} pp): the two one-sided tests at 5%. With three seeds many comparisons can show "
             "neither: those are counted as undecided, never as support.", ""]
    for c in found:
        lines += [f"### {c['claim']}", "", f"Test: {c['test']}.", ""]
        lines += [f"- {e}" for e in c["evidence"]] or ["- no runs yet"]
        lines += ["", f"**Verdict: {c['verdict']}.**", ""]
    return lines


def write(result: dict, out: str, note: str = "") -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r.get("lr") is not None]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    # (a) accuracy per arm: points with the seeds' sd, zoomed to 5 points below the best; an arm
    # below the window is drawn as ▼ on its floor with its accuracy written beside it
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    arms = list(dict.fromkeys((r["depth"], r["rule"]) for r in rows))
    width = 0.8 / max(1, len(conditions))
    finite = [100 * r["test_acc"] for r in rows if r["test_acc"] == r["test_acc"]]
    top = max(finite, default=100.0)
    floor = max(min(finite, default=0.0) - 0.3, top - 5.0)
    for j, cond in enumerate(conditions):
        for i, (depth, rule) in enumerate(arms):
            r = next((r for r in rows if (r["depth"], r["rule"], r["condition"]) == (depth, rule, cond)), None)
            if r is None or r["test_acc"] != r["test_acc"]:
                continue
            x, y = i + j * width, 100 * r["test_acc"]
            if y < floor:
                axes[0].plot(x, floor, "v", color=f"C{j}", ms=6)
                axes[0].annotate(f"{y:.1f}", (x, floor), xytext=(0, 6), textcoords="offset points", fontsize=6,
                                 ha="center", rotation=90)
            else:
                axes[0].errorbar(x, y, yerr=100 * r["test_acc_sd"], fmt="o", ms=4, capsize=2, color=f"C{j}")
        axes[0].plot([], [], "o", color=f"C{j}", label=cond)
    axes[0].set_xticks([i + 0.4 - width / 2 for i in range(len(arms))], [f"{d}\n{r}" for d, r in arms], fontsize=7)
    axes[0].set_ylabel("final test accuracy (%), mean ± sd over seeds")
    axes[0].set_ylim(floor - 0.1, top + 0.3)
    axes[0].grid(alpha=0.3, axis="y")
    if conditions:
        axes[0].legend(fontsize=7, ncol=len(conditions))
    # (b) accuracy against concordance
    for i, rule in enumerate(dict.fromkeys(c["rule"] for c in result["concordance"])):
        mine = [c for c in result["concordance"] if c["rule"] == rule]
        axes[1].errorbar([c["q"] for c in mine], [100 * c["test_acc"] for c in mine],
                         yerr=[100 * c["test_acc_sd"] for c in mine], fmt="o-", capsize=3, color=f"C{i}", label=rule)
    axes[1].set_xlabel("sign concordance q (fraction of feedback synapses with W's sign)")
    axes[1].set_ylabel("final test accuracy (%)")
    if result["concordance"]:
        axes[1].legend(fontsize=7, title=result["concordance"][0]["condition"], title_fontsize=7)
    # (c) ‖e‖ per layer over training, raw uSF on the deepest circuit run, per condition
    deep = [r for r in result["rows"] if r["rule"] == "usf-raw" and any(r.get("error_norms") or [])]  # diverged arms too
    depth = max((r["depth"] for r in deep), default=None, key=hidden_layers)
    for j, r in enumerate(r for r in deep if r["depth"] == depth):
        layers = hidden_populations(r["error_norms"][-1])
        epochs = range(len(r["error_norms"]))
        dead = sum(1 for layer in layers if r["error_norms"][-1].get(layer) == 0)  # ‖e‖ = 0: every unit silent
        label = r["condition"] + (f" (every rate diverged; lr {r['diverged_lr']:g})" if r.get("lr") is None else "") + (
            f" (‖e‖ = 0 at the end in {dead} of {len(layers)} layers, off the log axis)" if dead else "")
        for k, layer in enumerate(layers):
            axes[2].plot(epochs, [m.get(layer, math.nan) or math.nan for m in r["error_norms"]], "o-", ms=3,
                         color=f"C{j}", alpha=0.35 + 0.65 * (k + 1) / len(layers), label=None if k else label)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("‖e‖ per hidden layer (darker: nearer the readout)")
    axes[2].set_title(f"raw uSF, {depth}" if depth else "", fontsize=8)
    if deep:
        axes[2].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    result["claims"] = claims(result)
    lines = ["# Liao, Leibo & Poggio (2016) on MNIST", "", note, "", *claims_lines(result["claims"]),
             "## Every arm", "",
             "| circuit | rule | condition | lr (chosen on val) | val acc (%) | seeds | diverged | epochs | "
             "final test accuracy (%) | train loss, first seed: lowest (epoch) → final | wall time per run (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if r.get("lr") is None:
            why = (f"grid incomplete: lr {', '.join(f'{v:g}' for v in r['grid_missing'])} not run yet"
                   if r.get("grid_missing") else "every rate diverged")
            lines.append(f"| {r['depth']} | {r['rule']} | {r['condition']} | — ({why}) | — | — | — | — | — | — | — |")
            continue
        loss = (f"{r['train_loss_lowest']:.3g} ({r['train_loss_lowest_epoch']}) → {r['train_loss_final']:.3g}"
                if "train_loss_lowest" in r else "—")
        lines.append(f"| {r['depth']} | {r['rule']} | {r['condition']} | {r['lr']:g} | {100 * r['val_acc']:.2f} | "
                     f"{','.join(map(str, r['seeds']))} | {r['diverged']} | {r['epochs']} | "
                     f"{100 * r['test_acc']:.2f} ± {100 * r['test_acc_sd']:.2f} | {loss} | {r['seconds']:.0f} |")
    rising = [r for r in rows if r.get("train_loss_final", 0) > NOT_CONVERGED * r.get("train_loss_lowest", math.inf)]
    if rising:
        lines += ["", f"Not converged: in these arms the first seed's training loss ended more than {NOT_CONVERGED:g}× its lowest "
                  "(it rose again at the constant rate): " + "; ".join(
                      f"{r['depth']} {r['rule']} {r['condition']} (lowest at epoch {r['train_loss_lowest_epoch']})"
                      for r in rising) + "."]
    grown = [r for r in result["rows"] if r.get("grid_grown")]
    if grown:
        lines += ["", "Grids grown beyond an end where the best rate lay (bracketing, a decade at a time, at most "
                  f"{result.get('bracket', BRACKET)} beyond the grid): " + "; ".join(map(grown_note, grown)) + "."]
    if result["concordance"]:
        lines += ["", f"Sign concordance ({result['concordance'][0]['condition']}, 784-512-512-10):", "",
                  "| rule | q | lr | seeds | diverged | final test accuracy (%) |", "|---|---|---|---|---|---|"]
        for c in result["concordance"]:
            lines.append(f"| {c['rule']} | {c['q']:g} | {c['lr']:g} | {','.join(map(str, c['seeds']))} | {c['diverged']} | "
                         f"{100 * c['test_acc']:.2f} ± {100 * c['test_acc_sd']:.2f} |")
    return write_report(out, "liao", result, fig, lines,
                        "accuracy per arm; accuracy against sign concordance; error norms per layer over training")


def grown_note(row: dict) -> str:
    """An arm whose grid bracketing grew: the rates added, the one chosen, and whether the choice
    still sits at an end of the grown grid (the bracket used up)."""
    added = ", ".join(f"{v:g}" for v in row["grid_grown"])
    if row.get("lr") is None:
        return f"{row['depth']} {row['rule']} {row['condition']}: lr {added} added, not chosen yet"
    tried = [float(v) for v in row["val_acc_by_lr"]]
    at_end = row["lr"] in row["grid_grown"] and row["lr"] in (min(tried), max(tried))
    return (f"{row['depth']} {row['rule']} {row['condition']}: lr {added} added, chosen {row['lr']:g}"
            + (" (the end of its bracket: a rate beyond might be better)" if at_end else ""))


def main(argv=None):
    ap = sweep_parser(__doc__.split("\n\n")[0], os.path.join("docs", "results", "liao"))
    ap.add_argument("--depths", default=",".join(DEPTHS))
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--lrs", help="one learning-rate grid for every arm, comma-separated (default: per optimizer)")
    ap.add_argument("--bracket", type=int, help=f"decades an arm's grid may grow beyond the end where its best rate "
                                                f"lies (default {BRACKET}; 0 with --lrs)")
    ap.add_argument("--concordance", default=",".join(f"{q:g}" for q in CONCORDANCE),
                    help="q values of the concordance sweep ('' : none)")
    ap.add_argument("--concordance-condition", default="bn+bm", choices=list(CONDITIONS))
    args = ap.parse_args(argv)
    split = lambda s: [v.strip() for v in s.split(",") if v.strip()]  # noqa: E731
    depths, rules, conditions = split(args.depths), split(args.rules), split(args.conditions)
    for name, given, known in [("depth", depths, {**DEPTHS, **CONV}), ("rule", rules, RULES),
                               ("condition", conditions, CONDITIONS)]:
        unknown = [g for g in given if g not in known]
        if unknown:
            ap.error(f"unknown {name} {', '.join(unknown)} (known: {', '.join(known)})")
    grid = ({bm: tuple(float(v) for v in split(args.lrs)) for bm in (False, True)} if args.lrs else LR_GRID)
    qs = tuple(float(q) for q in split(args.concordance))
    seeds = seeds_of(args)
    arms = [(d, r, c) for d in depths for r in rules for c in conditions]
    # 1. every rate of each arm's grid, first seed: the selection on validation
    grid_cells = dict(cell(d, r, c, lr) for d, r, c in arms for lr in grid[CONDITIONS[c][0]])
    histories = mark_diverged(run_cells_from_args(FILE, grid_cells, args, seeds=seeds[:1], keep_going=True), args.out)
    bracket = args.bracket if args.bracket is not None else (0 if args.lrs else BRACKET)
    chosen = select(histories, arms, grid, seeds[0], bracket)
    # 1b. the rates beyond a grid's end where an arm's best lies (bracketing, in select), a decade at a time
    for _ in range(2 * bracket):
        beyond_cells = dict(cell(d, r, c, lr) for d, r, c in arms for lr in chosen[arm(d, r, c)][2]
                            if lr not in grid[CONDITIONS[c][0]])
        if not beyond_cells:
            break
        found = mark_diverged(run_cells_from_args(FILE, beyond_cells, args, seeds=seeds[:1], keep_going=True), args.out)
        if not found:
            break  # none finished yet (the other shards' share): the next invocation goes on
        for label, runs in found.items():
            histories.setdefault(label, {}).update(runs)
        chosen = select(histories, arms, grid, seeds[0], bracket)
    waiting = [a for a, (_, _, missing) in chosen.items() if missing]
    if waiting and args.shard != "0/1" and not args.report_only:
        print(f"{len(waiting)} arm(s) have grid runs not finished yet (other shards): their other seeds and "
              f"concordance runs start when the sweep is run again after those finish", file=sys.stderr)
    # 2. the other seeds at each arm's chosen rate; 3. the concordance sweep at the q = 1 arm's rate
    final_cells = dict(cell(d, r, c, chosen[arm(d, r, c)][0]) for d, r, c in arms if chosen[arm(d, r, c)][0] is not None)
    q_condition = args.concordance_condition
    for rule in CONCORDANCE_RULES:
        lr = chosen.get(arm("mlp2", rule, q_condition), (None,))[0]
        if lr is not None and rule in rules:
            final_cells.update(cell("mlp2", rule, q_condition, lr, q) for q in qs)
    more = mark_diverged(run_cells_from_args(FILE, final_cells, args, seeds=seeds, keep_going=True), args.out)
    for label, runs in more.items():
        histories.setdefault(label, {}).update(runs)
    note = (f"Written by `experiments/liao_sign_symmetry.py --epochs {args.epochs or 20}` (seeds "
            f"{','.join(map(str, seeds))}; protocol in the script's docstring: learning rate chosen per arm on the "
            f"validation split with seed {seeds[0]}, test accuracy of the final epoch, mean ± sample sd over the "
            f"seeds; a diverged run counts as failed). Wall time: the training epochs' seconds per run; "
            f"{training_note(histories)}.")
    result = {**summarize(histories, chosen, arms, seeds, qs, q_condition, args.out, grid), "bracket": bracket}
    print(write(result, args.out, note))


if __name__ == "__main__":
    main()
