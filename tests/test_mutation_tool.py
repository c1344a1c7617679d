"""tools/mutation.py's sample: drawn once, kept in the meta, finished at a later commit."""
import importlib.util
import os

spec = importlib.util.spec_from_file_location(
    "mutation_tool", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "mutation.py"))
mutation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mutation)


def mutants(n):
    return [{"job": f"m.py:op:{i}", "module": "m.py", "operator": "op", "occurrence": i} for i in range(n)]


def test_sample_is_drawn_once_and_finished_at_a_later_commit():
    first, meta = mutation.draw_sample(mutants(100), None, 10, 0, "a" * 40, "pkg")
    assert meta["jobs"] == [m["job"] for m in first] and meta["sampled"] == 10 and meta["mutants"] == 100
    assert len(set(meta["jobs"])) == 10
    # the code changed: 7 more mutants, one sampled job gone; the same sample (less the gone one) is run
    later = [m for m in mutants(107) if m["job"] != first[3]["job"]]
    again, meta2 = mutation.draw_sample(later, meta, 10, 0, "b" * 40, "pkg")
    assert [m["job"] for m in again] == [j for j in meta["jobs"] if j != first[3]["job"]]
    assert meta2 == meta  # the draw's commit and size stay on record
    # a fresh draw from the changed list would have been another sample
    fresh, _ = mutation.draw_sample(later, None, 10, 0, "b" * 40, "pkg")
    assert [m["job"] for m in fresh] != [m["job"] for m in again]


def test_a_different_size_draws_a_new_sample():
    _, meta = mutation.draw_sample(mutants(100), None, 10, 0, "a" * 40, "pkg")
    bigger, meta2 = mutation.draw_sample(mutants(100), meta, 30, 0, "a" * 40, "pkg")
    assert len(bigger) == 30 and meta2["sampled"] == 30
    everything, meta3 = mutation.draw_sample(mutants(100), meta, 0, 0, "a" * 40, "pkg")
    assert len(everything) == 100 and meta3["sampled"] == 100


def test_only_the_test_files_that_run_the_mutated_line_are_selected():
    tests = mutation.TESTS["circuits"]
    covered = {tests[0]: {"circuits/train.py": {10, 11}}, tests[2]: {"circuits/train.py": {11}, "circuits/data.py": {5}}}
    at = lambda module, line: {"module": module, "line": line}
    assert mutation.select_tests("circuits", at("circuits/train.py", 11), covered) == [tests[0], tests[2]]
    assert mutation.select_tests("circuits", at("circuits/train.py", 10), covered) == [tests[0]]
    assert mutation.select_tests("circuits", at("circuits/data.py", 5), covered) == [tests[2]]
    # a line no file runs, or no coverage map: every file (the conservative choice)
    assert mutation.select_tests("circuits", at("circuits/data.py", 6), covered) == tests
    assert mutation.select_tests("circuits", at("circuits/train.py", 11), None) == tests
    assert "-x" in mutation.test_command("circuits", [tests[2]]) and mutation.test_command("circuits", [tests[2]]).endswith(tests[2])


def test_a_line_inside_a_statement_counts_as_the_statement():
    source = "x = 1\nraise ValueError(\n    f'{x}'\n    'more')\ny = 2\n"
    assert mutation.statement_lines(source, 3) == {2, 3}
    assert mutation.statement_lines(source, 5) == {5}


def test_annotation_mutants_are_recognised_only_where_annotations_are_never_evaluated():
    lazy = "from __future__ import annotations\n\ndef f(a: int | None, b=1 | 2) -> str | None:\n    x: int | None = a\n    return b | 4\n"
    assert mutation.in_lazy_annotation(lazy, 3, lazy.splitlines()[2].index("|"))  # a's annotation
    assert mutation.in_lazy_annotation(lazy, 3, lazy.splitlines()[2].rindex("|"))  # the return annotation
    assert mutation.in_lazy_annotation(lazy, 4, lazy.splitlines()[3].index("|"))  # a local's annotation
    assert not mutation.in_lazy_annotation(lazy, 3, lazy.splitlines()[2].index("1 |") + 2)  # a default value
    assert not mutation.in_lazy_annotation(lazy, 5, lazy.splitlines()[4].index("|"))  # code
    eager = lazy.split("\n", 2)[2]  # no __future__ import: annotations are evaluated at definition
    assert not mutation.in_lazy_annotation(eager, 1, eager.splitlines()[0].index("|"))
