"""The offline lm-eval task suite shipped with faircalib: its data (generated deterministically from
`faircalib.data`, committed as JSON lines under `faircalib/eval/tasks/data/`), the dataset loader and
scoring hooks the task YAMLs point at, and the task/group names.

    faircalib_suite                    group of the three below
      faircalib_gen                    generate_until, exact match (whitespace-normalised), group mean
        faircalib_{arith,word,sort,reverse,kv}   100 HELDOUT examples per task family (the same examples,
                                       seed 0, as the zoo model cards' heldout exact match)
      faircalib_mc                     multiple_choice (loglikelihood of each choice), acc / acc_norm
        faircalib_tasks_mc             100 HELDOUT task examples (20 per family, seed 1): the answer vs 3
                                       perturbed wrong answers (off-by-one/ten numbers, unsorted or
                                       swapped sequences, other keys' values)
        faircalib_kjv_cloze            100 sentences of held-out KJV chapters: the last word vs the last
                                       words of 3 other sentences
      faircalib_kjv_ppl                loglikelihood_rolling on 40 held-out KJV passages (<= 400 chars):
                                       word/byte perplexity, bits per byte (masked-diffusion bound)

Regenerate the data (and check it is unchanged) with `python -m faircalib.eval.suite [--check]`.

Module boundary: data + lm-eval hooks; no model code (that is faircalib.eval.lm).
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from faircalib.data import FAMILIES, exact_match, kjv_split, sample_tasks
from faircalib.errors import DataError

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
DATA_DIR = TASKS_DIR / "data"
SUITE_GROUP = "faircalib_suite"
GEN_TASKS = tuple(f"faircalib_{f}" for f in FAMILIES)
MC_TASKS = ("faircalib_tasks_mc", "faircalib_kjv_cloze")
PPL_TASKS = ("faircalib_kjv_ppl",)
LEAF_TASKS = GEN_TASKS + MC_TASKS + PPL_TASKS
GROUPS = {"faircalib_gen": GEN_TASKS, "faircalib_mc": MC_TASKS, SUITE_GROUP: LEAF_TASKS}
GROUP_METRIC = {"faircalib_gen": "exact_match", "faircalib_mc": "acc"}  # aggregated as an unweighted mean
OWN_NAMES = frozenset(LEAF_TASKS) | frozenset(GROUPS)

N_GEN_PER_FAMILY = 100
N_MC_PER_FAMILY = 20
N_CLOZE = 100
N_PPL = 40
PPL_MAX_CHARS = 400


# ------------------------------------------------------------------------ generation
def _gen_rows() -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {t: [] for t in GEN_TASKS}
    for ex in sample_tasks(N_GEN_PER_FAMILY * len(FAMILIES), "heldout", seed=0):
        rows[f"faircalib_{ex.family}"].append({"family": ex.family, "question": ex.question, "prompt": ex.prompt,
                                               "answer": ex.answer})
    return rows


def _wrong_numbers(ans: int, rng: random.Random) -> list[str]:
    cands = [ans + d for d in (1, -1, 2, -2, 10, -10, 3, -3, 11, -11)]
    swapped = int(str(ans)[::-1]) if ans >= 10 else None
    if swapped is not None:
        cands.append(swapped)
    cands = sorted({c for c in cands if c >= 0 and c != ans})
    rng.shuffle(cands)
    return [str(c) for c in cands[:3]]


def _wrong_sequences(answer: str, source: list[str], rng: random.Random) -> list[str]:
    """Wrong orders of the answer's items: the source order, adjacent swaps, rotations, the reverse."""
    items = answer.split(" ")
    cands = [source, items[::-1], items[1:] + items[:1], items[-1:] + items[:-1]]
    for j in range(len(items) - 1):
        sw = list(items)
        sw[j], sw[j + 1] = sw[j + 1], sw[j]
        cands.append(sw)
    out = sorted({" ".join(c) for c in cands if c != items})
    rng.shuffle(out)
    if len(out) < 3:  # e.g. all items equal: change one item
        alphabet = "0123456789" if items[0].isdigit() else "abcdefghijklmnopqrstuvwxyz"
        while len(out) < 3:
            alt = list(items)
            alt[rng.randrange(len(alt))] = rng.choice(alphabet)
            s = " ".join(alt)
            if s != answer and s not in out:
                out.append(s)
    return out[:3]


def _wrong_answers(family: str, question: str, answer: str, rng: random.Random) -> list[str]:
    if family in ("arith", "word"):
        return _wrong_numbers(int(answer), rng)
    if family == "sort":
        return _wrong_sequences(answer, question.split(" ")[1:], rng)
    if family == "reverse":
        return _wrong_sequences(answer, question.split(" ")[1:], rng)
    if family == "kv":
        pairs = question.split(" ; ")[0].split(" ")
        others = sorted({p.split("=")[1] for p in pairs} - {answer})
        rng.shuffle(others)
        rest = [d for d in "0123456789" if d != answer and d not in others]
        rng.shuffle(rest)
        return (others + rest)[:3]
    raise DataError(f"no wrong-answer generator for task family {family!r}")


def _mc_rows() -> list[dict]:
    rows = []
    for ex in sample_tasks(N_MC_PER_FAMILY * len(FAMILIES), "heldout", seed=1):
        rng = random.Random(f"mc|{ex.family}|{ex.question}")
        choices = [ex.answer] + _wrong_answers(ex.family, ex.question, ex.answer, rng)
        assert len(set(choices)) == 4, (ex, choices)
        rng.shuffle(choices)
        rows.append({"family": ex.family, "question": ex.question, "prompt": ex.prompt, "choices": choices,
                     "label": choices.index(ex.answer)})
    return rows


_SENT_END = re.compile(r"(?<=[.?!])\s+")
_WORD = re.compile(r"^[A-Za-z]{3,}$")


def _sentences(chapter: str) -> list[str]:
    return [s.strip() for s in _SENT_END.split(chapter) if s.strip()]


def _cloze_rows() -> list[dict]:
    cands = []
    for ch in kjv_split("heldout"):
        for s in _sentences(ch):
            words = s.split(" ")
            last = words[-1].rstrip(".?!,;:")
            if 6 <= len(words) <= 30 and _WORD.match(last):
                cands.append((" ".join(words[:-1]), last))
    rng = random.Random("kjv_cloze")
    rng.shuffle(cands)
    picked, vocab = cands[:N_CLOZE], sorted({w for _, w in cands})
    rows = []
    for ctx, word in picked:
        wrong: list[str] = []
        while len(wrong) < 3:
            w = rng.choice(vocab)
            if w.lower() != word.lower() and w not in wrong:
                wrong.append(w)
        choices = [word] + wrong
        rng.shuffle(choices)
        rows.append({"context": ctx, "choices": choices, "label": choices.index(word)})
    return rows


def _ppl_rows() -> list[dict]:
    chapters = kjv_split("heldout")
    order = random.Random("kjv_ppl").sample(range(len(chapters)), N_PPL)
    rows = []
    for i in order:
        text = ""
        for s in _sentences(chapters[i]):
            nxt = f"{text} {s}".strip()
            if len(nxt) > PPL_MAX_CHARS and text:
                break
            text = nxt
        rows.append({"text": text[:PPL_MAX_CHARS * 2]})
    return rows


def build_rows() -> dict[str, list[dict]]:
    """Every task's documents, deterministically."""
    rows = _gen_rows()
    rows["faircalib_tasks_mc"] = _mc_rows()
    rows["faircalib_kjv_cloze"] = _cloze_rows()
    rows["faircalib_kjv_ppl"] = _ppl_rows()
    return rows


def _dumps(rows: list[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)


def write_data(directory: Path = DATA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for task, rows in build_rows().items():
        p = directory / f"{task}.jsonl"
        p.write_text(_dumps(rows), encoding="utf-8")
        paths.append(p)
    return paths


def stale_files(directory: Path = DATA_DIR) -> list[str]:
    """Tasks whose shipped data differs from what the generator produces now (empty = in sync)."""
    return [t for t, rows in build_rows().items()
            if not (directory / f"{t}.jsonl").is_file()
            or (directory / f"{t}.jsonl").read_text(encoding="utf-8") != _dumps(rows)]


# ------------------------------------------------------------------------ lm-eval hooks
def read_rows(task: str, directory: Path = DATA_DIR) -> list[dict]:
    path = directory / f"{task}.jsonl"
    if not path.is_file():
        raise DataError(f"offline eval data {path} is missing; reinstall faircalib or regenerate it with "
                        f"`python -m faircalib.eval.suite`")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_dataset(task: str | None = None, **_metadata: Any):
    """lm-eval `custom_dataset` hook: the task's shipped rows as a DatasetDict with one `test` split
    (read from the package: no network, no Hugging Face cache)."""
    import datasets

    if task not in LEAF_TASKS:
        raise DataError(f"unknown faircalib suite task {task!r}; known: {', '.join(LEAF_TASKS)}")
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(read_rows(task))})


def process_exact_match(doc: dict, results: list[str]) -> dict[str, float]:
    """lm-eval `process_results` hook: whitespace-normalised exact match (faircalib.data.exact_match)."""
    return {"exact_match": float(exact_match(results[0], doc["answer"]))}


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    import sys

    if "--check" in sys.argv:
        stale = stale_files()
        print("in sync" if not stale else f"stale: {', '.join(stale)}")
        sys.exit(1 if stale else 0)
    for p in write_data():
        print(p)
