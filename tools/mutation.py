"""Mutation testing of circuits/, plasticity/ and connectomes/ with cosmic-ray (not in CI: slow).

Each package's mutants are enumerated by cosmic-ray (``cosmic-ray init``: every operator at
every place it applies); a seeded random sample of them (``--sample``; all with ``--sample 0``),
drawn once and kept in OUT/PACKAGE.meta.json (so a later commit finishes the same sample),
is run with ``cosmic-ray mutate-and-test`` in a scratch git worktree of HEAD (the working tree
is never touched; ``--workers N``: N worktrees, N mutants at a time), each against those of the
package's own test files (``TESTS``) that execute the mutated line, stopping at the first
failure. Which files execute which lines is measured with coverage.py once per version of the
code (``coverage_map``; a file that never runs a line cannot see its mutant; where no file runs
it, all of them run; ``--all-tests`` turns the selection off). Outcomes go to OUT/PACKAGE.jsonl
as they finish, so an interrupted run resumes where it stopped; OUT/mutation.md and OUT/mutation.json summarise them:

    score = killed / (killed + survived)

over the sampled mutants (incompetent mutants, which do not even import, and timeouts count as
killed, as cosmic-ray counts them), with a 95% Wilson interval for the whole package's score
(the sample is uniform over its mutants), and every survivor's diff. ``--recheck`` runs the
survivors again at HEAD (after tests were added for them) and records that outcome beside the
first; OUT/explanations.json says why each remaining survivor is equivalent (its key:
MODULE:OPERATOR:OCCURRENCE), and the "non-equivalent" score leaves those out.

    pip install -e '.[dev,mutation]'
    python tools/mutation.py --packages plasticity,connectomes,circuits --sample 300 --out benchmarks/results/mutation
    python tools/mutation.py --recheck --out benchmarks/results/mutation
    python tools/mutation.py --report-only --out benchmarks/results/mutation
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
CODE = ("populations", "connectomes", "plasticity", "circuits", "probes", "tests")  # what coverage depends on
TESTS = {  # each package's tests: the files that exercise it directly
    "plasticity": ["tests/test_rules.py", "tests/test_equivalences.py", "tests/test_conv_rules.py",
                   "tests/test_sparse_feedback.py", "tests/test_liao.py", "tests/test_init_gains.py",
                   "tests/test_mixed.py", "tests/test_noise_alignment.py", "tests/test_dale.py",
                   "tests/test_sparse_forward.py"],
    "connectomes": ["tests/test_connectome_reciprocity.py", "tests/test_connectome_motifs.py",
                    "tests/test_connectome_files.py", "tests/test_connectome_records.py", "tests/test_connectome_kp.py",
                    "tests/test_connectome_report.py", "tests/test_conv_geometry.py", "tests/test_conv_equivalences.py",
                    "tests/test_sparse_forward.py", "tests/test_metrics.py", "tests/test_dale_connectome.py",
                    "tests/test_dale.py", "tests/test_init_gains.py", "tests/test_brain_mixture_study.py"],
    "circuits": ["tests/test_training_loop.py", "tests/test_run_folders.py", "tests/test_reliability.py",
                 "tests/test_faults.py", "tests/test_data_integrity.py", "tests/test_zoo.py", "tests/test_conv_data.py",
                 "tests/test_errors.py", "tests/test_zoo_convert.py", "tests/test_equivalences.py", "tests/test_scale_out.py",
                 "tests/test_sweep.py"],
}


def test_command(package: str, files: list[str] | None = None) -> str:
    files = " ".join(files or TESTS[package])
    return f"{shlex.quote(PYTHON)} -m pytest -x -q -p no:cacheprovider {files}"


def coverage_map(package: str, work: "Workdirs", cache: str, commit: str) -> dict[str, dict[str, set]]:
    """{test file: {module path (relative to the repository): the lines it executes}} for each of
    ``package``'s test files, measured once per version of the package and the tests with coverage.py (subprocesses and
    ``multiprocessing`` children included), in the scratch worktrees of ``work``, and cached in
    ``cache``. A mutant of a line that a
    test file never executes cannot change that file's outcome, so only the files that execute
    it need to run (``select_tests``)."""
    import hashlib
    trees = " ".join(subprocess.run(["git", "rev-parse", f"{commit}:{d}"], cwd=REPO, capture_output=True, text=True,
                                    check=True).stdout.strip() for d in CODE)
    path = os.path.join(cache, f"{package}-{hashlib.sha1(trees.encode()).hexdigest()[:12]}.json")  # code + tests
    if os.path.exists(path):
        with open(path) as f:
            return {t: {m: set(lines) for m, lines in mods.items()} for t, mods in json.load(f).items()}
    os.makedirs(cache, exist_ok=True)

    def measure(workdir: str, test_file: str) -> tuple[str, dict]:
        scratch = tempfile.mkdtemp(prefix="coverage-", dir=cache)
        rc = os.path.join(scratch, "coveragerc")
        with open(rc, "w") as f:
            f.write(f"[run]\nsource = {package}\nparallel = true\nconcurrency = multiprocessing, thread\n"
                    f"patch = subprocess\ndata_file = {os.path.join(scratch, '.coverage')}\n")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([PYTHON, "-m", "coverage", "run", f"--rcfile={rc}", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        test_file], cwd=workdir, env=env, capture_output=True)
        subprocess.run([PYTHON, "-m", "coverage", "combine", f"--rcfile={rc}"], cwd=workdir, env=env, capture_output=True)
        report = os.path.join(scratch, "coverage.json")
        subprocess.run([PYTHON, "-m", "coverage", "json", f"--rcfile={rc}", "-o", report], cwd=workdir, env=env,
                       capture_output=True, check=True)
        with open(report) as f:
            files = json.load(f)["files"]
        shutil.rmtree(scratch, ignore_errors=True)
        return test_file, {os.path.relpath(os.path.join(workdir, m), workdir): set(v["executed_lines"])
                           for m, v in files.items()}

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(len(work.paths)) as pool:  # one test file per worktree at a time
        result = dict(pool.map(lambda t: work.run(measure, t), TESTS[package]))
    with open(path + ".tmp", "w") as f:
        json.dump({t: {m: sorted(lines) for m, lines in mods.items()} for t, mods in result.items()}, f)
    os.replace(path + ".tmp", path)
    return result


def statement_lines(source: str, line: int) -> set[int]:
    """The first lines of the statements that contain ``line`` (coverage.py records a statement
    that spans several lines at its first; a mutant sits on any of them)."""
    import ast
    return {node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.stmt) and node.lineno <= line <= (node.end_lineno or node.lineno)} | {line}


ANNOTATION = ("changes an annotation, and the module has `from __future__ import annotations`: annotations "
              "are kept as strings and never evaluated, so no behaviour can change")


def in_lazy_annotation(source: str, line: int, column: int) -> bool:
    """Whether (line, column) (1-based line, 0-based character column, as cosmic-ray gives them)
    lies inside an annotation of a module that never evaluates them
    (``from __future__ import annotations``): a mutant there is equivalent by construction."""
    import ast
    tree = ast.parse(source)
    lazy = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names)
               for n in tree.body)
    if not lazy:
        return False
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            spans.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            spans.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            spans.append(node.annotation)
    at = (line, len(source.splitlines()[line - 1][:column].encode()))  # ast's columns count UTF-8 bytes
    return any((a.lineno, a.col_offset) <= at <= (a.end_lineno, a.end_col_offset) for a in spans)


def select_tests(package: str, mutant: dict, covered: dict[str, dict[str, set]] | None,
                 workdir: str | None = None) -> list[str]:
    """The test files of ``package`` that execute the mutant's line (or the first line of a
    statement containing it, read from ``workdir``'s copy of the module), in TESTS order; all of
    them when there is no coverage map or none executes it (the conservative choice)."""
    if covered is None:
        return TESTS[package]
    module = os.path.normpath(mutant["module"])
    lines = {mutant["line"]}
    if workdir is not None:
        with open(os.path.join(workdir, module)) as f:
            lines = statement_lines(f.read(), mutant["line"])
    chosen = [t for t in TESTS[package] if lines & covered.get(t, {}).get(module, set())]
    return chosen or TESTS[package]


def enumerate_mutants(package: str, workdir: str) -> list[dict]:
    """Every mutant cosmic-ray makes of ``package``: [{"job" (MODULE:OPERATOR:OCCURRENCE), "module",
    "operator", "occurrence", "line", "definition"}], in a fixed order (so a seeded sample repeats)."""
    from cosmic_ray.work_db import WorkDB, use_db

    config = os.path.join(workdir, f"{package}.toml")
    with open(config, "w") as f:
        f.write(f'[cosmic-ray]\nmodule-path = "{package}"\ntimeout = 600.0\nexcluded-modules = []\n'
                f'test-command = "true"\n[cosmic-ray.distributor]\nname = "local"\n')
    db = os.path.join(workdir, f"{package}.sqlite")
    subprocess.run([PYTHON, "-m", "cosmic_ray.cli", "init", config, db], cwd=workdir, check=True,
                   capture_output=True)
    with use_db(db, WorkDB.Mode.open) as work:
        items = list(work.work_items)
    out = []
    for item in items:
        m = item.mutations[0]
        key = f"{m.module_path}:{m.operator_name}:{m.occurrence}"  # stable across enumerations (job ids are not)
        out.append({"job": key, "module": str(m.module_path), "operator": m.operator_name,
                    "occurrence": m.occurrence, "line": m.start_pos[0], "column": m.start_pos[1],
                    "definition": m.definition_name})
    return sorted(out, key=lambda r: (r["module"], r["line"], r["operator"], r["occurrence"]))


def draw_sample(mutants: list[dict], meta: dict | None, size: int, seed: int, commit: str,
                package: str) -> tuple[list[dict], dict]:
    """The mutants to run and the package's meta record. The sample is drawn once (seeded, uniform
    over ``mutants``; all of them with ``size`` 0) and its jobs are kept in the meta, so a later
    run at another commit finishes the *same* sample instead of drawing a new one from a changed
    list (a job that no longer exists at HEAD is reported and skipped)."""
    if meta and meta.get("jobs") and meta["sampled"] == (meta["mutants"] if size <= 0 else min(size, meta["mutants"])):
        by_job = {m["job"]: m for m in mutants}
        missing = [j for j in meta["jobs"] if j not in by_job]
        if missing:
            print(f"{package}: {len(missing)} sampled mutants no longer exist at HEAD: {', '.join(missing)}", file=sys.stderr)
        if meta["commit"] != commit:
            print(f"{package}: finishing the sample drawn at {meta['commit'][:7]} ({meta['mutants']} mutants) "
                  f"at {commit[:7]} ({len(mutants)} mutants)", file=sys.stderr)
        return [by_job[j] for j in meta["jobs"] if j in by_job], meta
    if meta and meta["commit"] != commit:
        print(f"{package}: earlier results are of another commit and sample; they stay and count", file=sys.stderr)
    sample = mutants if size <= 0 else random.Random(seed).sample(mutants, min(size, len(mutants)))
    return sample, {"mutants": len(mutants), "sampled": len(sample), "seed": seed, "commit": commit,
                    "jobs": [m["job"] for m in sample]}


def run_mutant(mutant: dict, package: str, workdir: str, timeout: float, tests: list[str] | None = None) -> dict:
    """Apply one mutant in ``workdir`` (a scratch checkout), run ``tests`` (default: all of the
    package's test files), restore."""
    start = time.time()
    try:
        proc = subprocess.run([PYTHON, "-m", "cosmic_ray.cli", "mutate-and-test", mutant["module"], mutant["operator"],
                               str(mutant["occurrence"]), test_command(package, tests)], cwd=workdir, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        outcome = result.get("test_outcome") or result.get("worker_outcome")
        diff = result.get("diff")
    except subprocess.TimeoutExpired:
        outcome, diff = "timeout", None
        subprocess.run(["git", "checkout", "--", mutant["module"]], cwd=workdir)  # undo a mutation left behind
    return {**mutant, "outcome": outcome, "diff": diff, "seconds": round(time.time() - start, 1),
            "tests": len(tests or TESTS[package])}


def recheck(package: str, out: str, work: "Workdirs", commit: str, timeout: float, covered=None) -> None:
    """Run the recorded survivors of ``package`` again at HEAD (``work``'s worktrees, as many at a
    time as it has) and record the outcome as "recheck" on their rows (the first outcome stays).
    Each survivor is found again among HEAD's mutants by its job (MODULE:OPERATOR:OCCURRENCE), so
    its line, and the test files that run it (``covered``), are HEAD's."""
    path = os.path.join(out, f"{package}.jsonl")
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    explained = set(json.load(open(os.path.join(out, "explanations.json")))) if os.path.exists(
        os.path.join(out, "explanations.json")) else set()
    survivors = [r for r in rows if r["outcome"] == "survived" and not r.get("static") and r["job"] not in explained
                 and r.get("recheck", {}).get("outcome") in (None, "survived")]  # equivalent or killed: not again
    at_head = {m["job"]: m for m in enumerate_mutants(package, work.paths[0])} if survivors else {}

    def again(path, r):
        mutant = at_head.get(r["job"])
        if mutant is None:
            return "gone"  # the code it mutated no longer exists at HEAD
        return run_mutant(mutant, package, path, timeout, select_tests(package, mutant, covered, path))["outcome"]

    from concurrent.futures import ThreadPoolExecutor, as_completed
    with ThreadPoolExecutor(len(work.paths)) as pool:
        futures = {pool.submit(work.run, again, r): r for r in survivors}
        for future in as_completed(futures):  # each outcome recorded as it comes: a stopped recheck keeps them
            r = futures[future]
            r["recheck"] = {"outcome": future.result(), "commit": commit}
            print(f"{package} recheck {r['module']}:{r['line']} {r['operator']}: {r['recheck']['outcome']}",
                  file=sys.stderr, flush=True)
            with open(path + ".tmp", "w") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)
            os.replace(path + ".tmp", path)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def summarise(out: str) -> dict:
    explanations = {}
    if os.path.exists(os.path.join(out, "explanations.json")):
        with open(os.path.join(out, "explanations.json")) as f:
            explanations = json.load(f)
    packages = {}
    for package in TESTS:
        path = os.path.join(out, f"{package}.jsonl")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        meta = json.load(open(os.path.join(out, f"{package}.meta.json")))
        counts = {}
        for r in rows:
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        killed = sum(counts.get(k, 0) for k in ("killed", "incompetent", "timeout"))
        survived = counts.get("survived", 0)
        lo, hi = wilson(killed, killed + survived)
        now = [r.get("recheck", {}).get("outcome", r["outcome"]) for r in rows]  # after the tests added for survivors
        for r in rows:
            if r.get("static") == "annotation":
                explanations.setdefault(r["job"], ANNOTATION)
        equivalent = sum(o == "survived" and r["job"] in explanations for o, r in zip(now, rows))
        killed_now = sum(o in ("killed", "incompetent", "timeout") for o in now)
        alive_now = sum(o == "survived" for o in now) - equivalent
        packages[package] = {"mutants": meta["mutants"], "sampled": meta["sampled"], "seed": meta["seed"],
                             "commit": meta["commit"], "run": len(rows), "outcomes": counts,
                             "score": killed / (killed + survived) if killed + survived else float("nan"),
                             "interval95": [lo, hi], "hours": sum(r["seconds"] for r in rows) / 3600,
                             "now": {"killed": killed_now, "survived_not_equivalent": alive_now, "equivalent": equivalent,
                                     "score_non_equivalent": killed_now / (killed_now + alive_now) if killed_now + alive_now else float("nan"),
                                     "interval95": list(wilson(killed_now, killed_now + alive_now))},
                             "survivors": [{**r, "explanation": explanations.get(r["job"])}
                                           for r in rows if r["outcome"] == "survived"]}
    return packages


def write(packages: dict, out: str) -> None:
    with open(os.path.join(out, "mutation.json"), "w") as f:
        json.dump(packages, f, indent=1)
    lines = ["# Mutation testing (tools/mutation.py, cosmic-ray)", "",
             "score = killed / (killed + survived) over a uniform random sample of each package's mutants "
             "(incompetent and timed-out mutants count as killed); 95% Wilson interval for the package. "
             "Each mutant runs against the package's own test files (`tools/mutation.py: TESTS`).", "",
             "| package | mutants | sampled | run | killed | survived | incompetent | timeout | score (first run) | 95% interval | "
             "now: killed / alive / equivalent | now: score of non-equivalent | 95% interval | CPU hours | commit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p, s in packages.items():
        o = s["outcomes"]
        lines.append(f"| {p} | {s['mutants']} | {s['sampled']} | {s['run']} | {o.get('killed', 0)} | {o.get('survived', 0)} | "
                     f"{o.get('incompetent', 0)} | {o.get('timeout', 0)} | {100 * s['score']:.1f}% | "
                     f"{100 * s['interval95'][0]:.1f}–{100 * s['interval95'][1]:.1f}% | "
                     f"{s['now']['killed']} / {s['now']['survived_not_equivalent']} / {s['now']['equivalent']} | "
                     f"{100 * s['now']['score_non_equivalent']:.1f}% | {100 * s['now']['interval95'][0]:.1f}–"
                     f"{100 * s['now']['interval95'][1]:.1f}% | {s['hours']:.2f} | {s['commit'][:7]} |")
    for p, s in packages.items():
        if s["survivors"]:
            lines += ["", f"## Surviving mutants: {p}", ""]
            for r in s["survivors"]:
                recheck = r.get("recheck")
                status = (f"killed at {recheck['commit'][:7]} by the tests added for it" if recheck and recheck["outcome"] != "survived"
                          else ("equivalent: " + r["explanation"]) if r.get("explanation") else "alive: to kill")
                lines += [f"- `{r['module']}:{r['line']}` ({r['definition']}), {r['operator']} #{r['occurrence']}: {status}",
                          "", "```diff", (r["diff"] or "").strip(), "```", ""]
    with open(os.path.join(out, "mutation.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


class Workdirs:
    """``n`` scratch worktrees of ``commit`` under ``scratch`` (``../shared`` beside them, where
    the tests look for the data), lent one at a time to the threads that run mutants."""

    def __init__(self, scratch: str, commit: str, n: int):
        import queue
        self.paths = [os.path.join(scratch, f"repo{k}") for k in range(max(1, n))]
        self.free = queue.Queue()
        for path in self.paths:
            subprocess.run(["git", "worktree", "add", "--detach", path, commit], cwd=REPO, check=True, capture_output=True)
            self.free.put(path)
        shared = os.path.join(os.path.dirname(REPO), "shared")
        if os.path.isdir(shared) and not os.path.exists(os.path.join(scratch, "shared")):
            os.symlink(shared, os.path.join(scratch, "shared"))

    def run(self, fn, *args):
        path = self.free.get()
        try:
            return fn(path, *args)
        finally:
            self.free.put(path)

    def remove(self):
        for path in self.paths:
            subprocess.run(["git", "worktree", "remove", "--force", path], cwd=REPO, capture_output=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packages", default="plasticity,connectomes,circuits")
    ap.add_argument("--sample", type=int, default=300, help="mutants per package (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant's test run")
    ap.add_argument("--workers", type=int, default=1, help="mutants run at a time (one scratch worktree each)")
    ap.add_argument("--all-tests", action="store_true",
                    help="run every test file of the package for every mutant (default: only the files whose "
                         "coverage includes the mutated line; all of them when none does)")
    ap.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "circuits-mutation"),
                    help="where the per-commit coverage maps are kept")
    ap.add_argument("--out", default=os.path.join("benchmarks", "results", "mutation"))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--recheck", action="store_true", help="run the recorded survivors again at HEAD")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if not args.report_only:
        from concurrent.futures import ThreadPoolExecutor, as_completed
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        with tempfile.TemporaryDirectory(prefix="mutation-") as scratch:
            work = Workdirs(scratch, commit, args.workers)
            try:
                for package in [p for p in args.packages.split(",") if p]:
                    if package not in TESTS:
                        raise SystemExit(f"unknown package {package!r} (known: {', '.join(TESTS)})")
                    covered = None
                    if not args.all_tests:
                        print(f"{package}: measuring each test file's coverage at {commit[:7]}", file=sys.stderr, flush=True)
                        covered = coverage_map(package, work, args.cache, commit)
                    if args.recheck:
                        recheck(package, args.out, work, commit, args.timeout, covered)
                        continue
                    mutants = enumerate_mutants(package, work.paths[0])
                    meta_path = os.path.join(args.out, f"{package}.meta.json")
                    meta = json.load(open(meta_path)) if os.path.exists(meta_path) else None
                    sample, meta = draw_sample(mutants, meta, args.sample, args.seed, commit, package)
                    with open(meta_path, "w") as f:
                        json.dump(meta, f)
                    results = os.path.join(args.out, f"{package}.jsonl")
                    done = set()
                    if os.path.exists(results):
                        with open(results) as f:
                            done = {json.loads(line)["job"] for line in f if line.strip()}
                    todo = []
                    for i, m in enumerate(sample):
                        if m["job"] in done:
                            continue
                        with open(os.path.join(work.paths[0], m["module"])) as f:
                            lazy = "column" in m and in_lazy_annotation(f.read(), m["line"], m["column"])
                        if lazy:  # equivalent by construction: recorded, not run
                            with open(results, "a") as f:
                                f.write(json.dumps({**m, "outcome": "survived", "static": "annotation", "diff": None,
                                                    "seconds": 0.0, "tests": 0}) + "\n")
                            print(f"{package} {i + 1}/{len(sample)} {m['module']}:{m['line']}: an annotation, never "
                                  "evaluated (equivalent, not run)", file=sys.stderr, flush=True)
                        else:
                            todo.append((i, m))
                    with ThreadPoolExecutor(max(1, args.workers)) as pool:
                        futures = {pool.submit(work.run, lambda path, m: run_mutant(
                                       m, package, path, args.timeout, select_tests(package, m, covered, path)), m): i
                                   for i, m in todo}
                        for future in as_completed(futures):
                            r = future.result()
                            with open(results, "a") as f:
                                f.write(json.dumps(r) + "\n")
                            print(f"{package} {futures[future] + 1}/{len(sample)} {r['module']}:{r['line']} {r['operator']}: "
                                  f"{r['outcome']} ({r['seconds']} s, {r['tests']} test files)", file=sys.stderr, flush=True)
            finally:
                work.remove()
    packages = summarise(args.out)
    write(packages, args.out)
    print(open(os.path.join(args.out, "mutation.md")).read())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
