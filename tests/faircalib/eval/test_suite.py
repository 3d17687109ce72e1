"""The offline suite's shipped data: in sync with its generator, held-out only, well-formed choices."""
from __future__ import annotations

from faircalib.data import FAMILIES, kjv_split, sample_tasks, split_of
from faircalib.eval.suite import (
    GEN_TASKS,
    GROUPS,
    LEAF_TASKS,
    N_GEN_PER_FAMILY,
    TASKS_DIR,
    load_dataset,
    process_exact_match,
    read_rows,
    stale_files,
)


def test_shipped_data_matches_the_generator():
    assert stale_files() == []


def test_generation_tasks_are_the_heldout_examples_of_the_model_cards():
    card_set = sample_tasks(N_GEN_PER_FAMILY * len(FAMILIES), "heldout", seed=0)  # what model cards score
    for fam in FAMILIES:
        rows = read_rows(f"faircalib_{fam}")
        want = [ex for ex in card_set if ex.family == fam]
        assert [(r["question"], r["answer"], r["prompt"]) for r in rows] == [(e.question, e.answer, e.prompt)
                                                                            for e in want]
        assert all(split_of(fam, r["question"]) == "heldout" for r in rows)


def test_multiple_choice_rows_are_well_formed():
    mc = read_rows("faircalib_tasks_mc")
    assert sorted({r["family"] for r in mc}) == sorted(FAMILIES) and len(mc) == 100
    for r in mc:
        assert split_of(r["family"], r["question"]) == "heldout"
        assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4
    labels = [r["label"] for r in mc]
    assert len(set(labels)) == 4  # the answer's position is shuffled
    cloze = read_rows("faircalib_kjv_cloze")
    held = " ".join(kjv_split("heldout"))
    for r in cloze:
        assert len({c.lower() for c in r["choices"]}) == 4
        assert f"{r['context']} {r['choices'][r['label']]}" in held  # the true last word follows the context
    assert all(len(r["text"]) > 20 and r["text"] in held for r in read_rows("faircalib_kjv_ppl"))


def test_multiple_choice_answers_are_correct():
    """The labelled choice is the task's exact answer (recomputed from the question)."""
    for r in read_rows("faircalib_tasks_mc"):
        q, ans = r["question"], r["choices"][r["label"]]
        if r["family"] == "arith":
            a, op, b = (q[:-2].partition("+") if "+" in q else q[:-2].partition("-"))
            assert int(ans) == (int(a) + int(b) if op == "+" else int(a) - int(b))
        elif r["family"] == "sort":
            assert ans == " ".join(sorted(q.split(" ")[1:]))
        elif r["family"] == "reverse":
            assert ans == " ".join(reversed(q.split(" ")[1:]))
        elif r["family"] == "kv":
            pairs = dict(p.split("=") for p in q.split(" ; ")[0].split(" "))
            assert ans == pairs[q.split(" ; ")[1].rstrip("?")]


def test_hooks_and_yaml_files():
    ds = load_dataset(task="faircalib_arith", version=1.0)
    assert ds["test"].num_rows == N_GEN_PER_FAMILY and ds["test"][0]["prompt"].startswith("Q: ")
    assert process_exact_match({"answer": "1 2 3"}, ["  1  2 3 "]) == {"exact_match": 1.0}
    assert process_exact_match({"answer": "12"}, ["1 2"]) == {"exact_match": 0.0}
    names = {p.stem for p in TASKS_DIR.glob("faircalib_*.yaml")}
    assert names == set(LEAF_TASKS)
    assert set(GROUPS["faircalib_gen"]) == set(GEN_TASKS)
    for g in GROUPS:
        assert (TASKS_DIR / f"_{g}.yaml").is_file()
