"""Procedurally generated tasks with exact answers: the offline stand-in for GSM8K-style probing and
for exact-match evaluation of the zoo models.

Families (all short, so a few-million-parameter dLLM can learn them on a CPU):
  arith    two-operand addition / subtraction of numbers < 100       "Q: 47+38=?\\nA:" -> "85"
  word     one-step GSM-style word problems                           -> "12"
  sort     sort 4-6 digits ascending                                  -> "1 3 3 8 9"
  reverse  reverse 3-6 letters                                        -> "d a c b"
  kv       key-value recall from 3-5 pairs                            -> "7"

Long-answer families (dsort, lsort, lrev, and the harder chain, psum, shift, trace; answers of 39-47
tokens) are in long_tasks.py and are sampled the same way; `FAMILY_SETS` names the sets (sources
builtin:tasks / builtin:longtasks / builtin:longtasks-hard).

Splits are decided by a hash of (family, question), not by the RNG, so `train`, `probe` and `heldout`
examples are disjoint whatever seed or count anyone asks for: 80% train, 10% probe (Stage I / Stage II
data), 10% heldout (evaluation only).
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from faircalib.data.long_tasks import HARD_LONG_FAMILIES, LONG_FAMILIES, LONG_GENERATORS
from faircalib.errors import ConfigError

FAMILIES = ("arith", "word", "sort", "reverse", "kv")  # the short families (builtin:tasks)
SPLITS = ("train", "probe", "heldout")
_SPLIT_BUCKETS = {"train": range(0, 80), "probe": range(80, 90), "heldout": range(90, 100)}


@dataclass(frozen=True)
class TaskExample:
    family: str
    question: str
    answer: str

    @property
    def prompt(self) -> str:
        """The canonical prompt; the model writes the answer into the window after it."""
        return format_prompt(self.question)

    @property
    def split(self) -> str:
        return split_of(self.family, self.question)


def format_prompt(question: str) -> str:
    return f"Q: {question}\nA:"


def split_of(family: str, question: str) -> str:
    bucket = int(hashlib.sha256(f"{family}|{question}".encode()).hexdigest()[:8], 16) % 100
    return next(s for s, r in _SPLIT_BUCKETS.items() if bucket in r)


# ------------------------------------------------------------------------ generators
_NAMES = ["Ann", "Ben", "Cara", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivy", "Jon", "Kai", "Lea", "Max", "Nia",
          "Omar", "Pia", "Raj", "Sam", "Tia", "Uma"]
_ITEMS = ["apples", "books", "coins", "eggs", "marbles", "pens", "stamps", "cards", "shells", "cookies"]
_GAIN = ["buys {b} more", "finds {b} more", "gets {b} more", "is given {b} more"]
_LOSS = ["gives away {b}", "loses {b}", "sells {b}", "eats {b}"]


def _arith(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    if rng.random() < 0.5:
        return f"{a}+{b}=?", str(a + b)
    a, b = max(a, b), min(a, b)
    return f"{a}-{b}=?", str(a - b)


def _word(rng: random.Random) -> tuple[str, str]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a = rng.randint(2, 20)
    if rng.random() < 0.5:
        b = rng.randint(1, 20)
        verb, ans = rng.choice(_GAIN).format(b=b), a + b
    else:
        b = rng.randint(1, a)
        verb, ans = rng.choice(_LOSS).format(b=b), a - b
    return f"{name} has {a} {item}. {name} {verb}. How many {item} does {name} have now?", str(ans)


def _sort(rng: random.Random) -> tuple[str, str]:
    xs = [rng.randint(0, 9) for _ in range(rng.randint(4, 6))]
    return "sort " + " ".join(map(str, xs)), " ".join(map(str, sorted(xs)))


def _reverse(rng: random.Random) -> tuple[str, str]:
    xs = [chr(ord("a") + rng.randrange(26)) for _ in range(rng.randint(3, 6))]
    return "reverse " + " ".join(xs), " ".join(reversed(xs))


def _kv(rng: random.Random) -> tuple[str, str]:
    keys = rng.sample("abcdefghijklmnopqrstuvwxyz", rng.randint(3, 5))
    vals = [rng.randint(0, 9) for _ in keys]
    q = rng.randrange(len(keys))
    pairs = " ".join(f"{k}={v}" for k, v in zip(keys, vals))
    return f"{pairs} ; {keys[q]}?", str(vals[q])


_GENERATORS = {"arith": _arith, "word": _word, "sort": _sort, "reverse": _reverse, "kv": _kv, **LONG_GENERATORS}
ALL_FAMILIES = tuple(_GENERATORS)
# task-set name (the source builtin:NAME[:SPLIT]) -> its families
FAMILY_SETS: dict[str, tuple[str, ...]] = {"tasks": FAMILIES, "longtasks": LONG_FAMILIES,
                                           "longtasks-hard": HARD_LONG_FAMILIES}


def families_of(source: str) -> tuple[str, ...] | None:
    """The families of a task source `builtin:tasks[:SPLIT]` / `builtin:longtasks[:SPLIT]`; None otherwise."""
    if not source.startswith("builtin:"):
        return None
    return FAMILY_SETS.get(source.split(":")[1])


def _check(families, split):
    bad = [f for f in families if f not in _GENERATORS]
    if bad:
        raise ConfigError(f"unknown task family {bad[0]!r}; allowed: {', '.join(ALL_FAMILIES)}")
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")


def sample_tasks(n: int, split: str = "train", seed: int = 0,
                 families: tuple[str, ...] | list[str] = FAMILIES) -> list[TaskExample]:
    """`n` distinct examples of `split`, families interleaved round-robin, deterministic in `seed`."""
    families = tuple(families)
    _check(families, split)
    rngs = {f: random.Random(f"{seed}|{split}|{f}") for f in families}
    out: list[TaskExample] = []
    seen: set[tuple[str, str]] = set()
    i = 0
    while len(out) < n:
        fam = families[i % len(families)]
        i += 1
        for _ in range(10_000):
            q, a = _GENERATORS[fam](rngs[fam])
            if (fam, q) not in seen and split_of(fam, q) == split:
                seen.add((fam, q))
                out.append(TaskExample(fam, q, a))
                break
        else:  # pragma: no cover - the families have far more than enough distinct questions
            raise ConfigError(f"task family {fam!r} ran out of distinct {split} examples; ask for fewer")
    return out


_WS = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
    return _WS.sub(" ", text).strip()


def exact_match(prediction: str, answer: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(answer)
