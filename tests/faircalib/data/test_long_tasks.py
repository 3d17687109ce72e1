"""Long-answer task families: answers check exactly, fill >= 80% of the 48-token window with the zoo
tokenizer, splits disjoint by hash, and the task-aligned calibration sequences end on an answer window."""
from __future__ import annotations

import pytest
import torch

from faircalib.data import (HARD_LONG_FAMILIES, LONG_FAMILIES, LONG_WINDOW, answer_window_ids, exact_match, families_of, iter_documents,
                            sample_prompts, sample_task_sequences, sample_tasks, split_of)
from faircalib.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def zoo_tokenizer():
    from faircalib.models import load_dllm

    return load_dllm("zoo:tiny-llada").tokenizer


def _solve(ex) -> str:
    """An independent solver per family (parses the question, recomputes the answer)."""
    q = ex.question
    if ex.family in ("dsort", "lsort"):
        return " ".join(sorted(q.split()[1:]))
    if ex.family == "lrev":
        return " ".join(q.split()[1:][::-1])
    if ex.family == "chain":
        import re

        nums = re.findall(r"[+-]?\d+", q.removesuffix("=?"))
        total, steps = int(nums[0]), []
        for tok in nums[1:]:
            new = total + int(tok)
            steps.append(f"{total}{tok[0]}{abs(int(tok))}={new}")
            total = new
        return " ".join(steps)
    if ex.family == "psum":
        digits, s, out = q.split()[1], 0, []
        for d in digits:
            s = (s + int(d)) % 10
            out.append(str(s))
        return "".join(out)
    if ex.family == "shift":
        return " ".join(chr((ord(c) - 97 + 1) % 26 + 97) for c in q.split()[1:])
    if ex.family == "trace":
        pairs, looks = q.split(" ; ")
        table = dict(p.split("=") for p in pairs.split())
        return " ".join(f"{k}={table[k]}" for k in looks.split())
    raise AssertionError(ex.family)


@pytest.mark.parametrize("family", LONG_FAMILIES + HARD_LONG_FAMILIES)
def test_answers_are_exactly_what_an_independent_solver_computes(family):
    exs = sample_tasks(200, "train", seed=3, families=(family,))
    assert len({e.question for e in exs}) == 200
    for ex in exs:
        assert exact_match(_solve(ex), ex.answer), (ex.question, ex.answer)


def test_chain_totals_stay_two_digit_and_propagate():
    for ex in sample_tasks(100, "probe", seed=0, families=("chain",)):
        steps = ex.answer.split()
        assert len(steps) == 5
        for prev, nxt in zip(steps, steps[1:]):
            assert nxt.split("=")[0][:2] == prev.split("=")[1]  # the result is the next first operand
        assert all(10 <= int(s.split("=")[1]) <= 99 for s in steps)


@pytest.mark.parametrize("family", LONG_FAMILIES + HARD_LONG_FAMILIES)
def test_answers_fill_at_least_80_percent_of_the_window(zoo_tokenizer, family):
    lens = []
    for ex in sample_tasks(300, "heldout", seed=0, families=(family,)):
        window = answer_window_ids(zoo_tokenizer, ex.answer, LONG_WINDOW)
        n = window.index(zoo_tokenizer.eos_token_id)
        assert len(window) == LONG_WINDOW and n < LONG_WINDOW  # at least one EOS fits
        lens.append(n)
    assert min(lens) / LONG_WINDOW >= 0.8, (family, min(lens))


@pytest.mark.parametrize("family", LONG_FAMILIES + HARD_LONG_FAMILIES)
def test_splits_are_disjoint_by_hash(family):
    qs = {s: {e.question for e in sample_tasks(300, s, seed=0, families=(family,))}
          for s in ("train", "probe", "heldout")}
    assert not (qs["train"] & qs["probe"]) and not (qs["train"] & qs["heldout"]) and not (qs["probe"] & qs["heldout"])
    assert all(split_of(family, q) == "heldout" for q in qs["heldout"])
    # other seeds of heldout never produce a train/probe question
    assert all(split_of(family, e.question) == "heldout" for e in sample_tasks(100, "heldout", 9, (family,)))


def test_sorted_answers_are_monotone_so_one_wrong_item_propagates():
    for fam in ("dsort", "lsort"):
        for ex in sample_tasks(50, "probe", seed=0, families=(fam,)):
            items = ex.answer.split()
            assert items == sorted(items) and len(items) >= (20 if fam == "dsort" else 40)
            assert sorted(ex.question.split()[1:]) == items  # a permutation of the question's items


def test_longtasks_source_names_the_long_families():
    assert LONG_FAMILIES == ("dsort", "lsort", "lrev")
    assert families_of("builtin:longtasks:probe") == LONG_FAMILIES
    assert families_of("builtin:longtasks-hard:probe") == HARD_LONG_FAMILIES == ("chain", "psum", "shift", "trace")
    assert families_of("builtin:tasks") == ("arith", "word", "sort", "reverse", "kv")
    assert families_of("builtin:kjv:train") is None
    prompts = sample_prompts("builtin:longtasks:probe", 8, seed=0)
    assert len(prompts) == 8 and {p.split()[1] for p in prompts} == {"sort", "reverse"}
    hard = sample_prompts("builtin:longtasks-hard:probe", 8, seed=0)
    assert {p.split()[1] for p in hard} & {"psum", "shift"}
    docs = list(iter_documents("builtin:longtasks:heldout", task_examples=80))
    assert len(docs) == 10 and all(d.startswith("Q: ") for d in docs)


def test_unknown_family_and_short_window_are_one_line_errors(zoo_tokenizer):
    with pytest.raises(ConfigError, match="unknown task family 'nope'"):
        sample_tasks(1, "train", families=("nope",))
    ex = sample_tasks(1, "train", families=("psum",))[0]
    with pytest.raises(DataError, match="window=16 is too short"):
        answer_window_ids(zoo_tokenizer, ex.answer, 16)


def test_task_sequences_end_on_a_probe_split_answer_window(zoo_tokenizer):
    n, S, L = 6, 192, LONG_WINDOW
    ids = sample_task_sequences(zoo_tokenizer, "builtin:longtasks:probe", n, S, L, seed=1)
    assert ids.shape == (n, S) and ids.dtype == torch.long
    eos = zoo_tokenizer.eos_token_id
    probe = {e.answer for e in sample_tasks(n * 10, "probe", 1, LONG_FAMILIES)}
    for row in ids:
        window = row[-L:].tolist()
        assert eos in window and window[-1] == eos  # answer then EOS fill
        answer = zoo_tokenizer.decode(window[:window.index(eos)]).strip()
        assert answer in probe  # a probe-split example's answer, not heldout
    assert torch.equal(ids, sample_task_sequences(zoo_tokenizer, "builtin:longtasks:probe", n, S, L, seed=1))
    assert not torch.equal(ids, sample_task_sequences(zoo_tokenizer, "builtin:longtasks:probe", n, S, L, seed=2))
    with pytest.raises(DataError, match="needs a task source"):
        sample_task_sequences(zoo_tokenizer, "builtin:kjv:train", n, S, L)
