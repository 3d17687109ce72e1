"""Long-answer task families: answers that fill most of a 48-token decoding window and are produced
item by item, the regime the paper's GSM8K chain-of-thought window is in (the short families of tasks.py
leave ~77% of their window as EOS).

Token counts below are for the zoo tokenizer (byte-level BPE, every digit its own token, a space
before a digit its own token "Ġ", a space + letter one token "Ġa"); `tests/faircalib/data/
test_long_tasks.py` checks them with the real tokenizer.

The testbed set (`LONG_FAMILIES`, source builtin:longtasks[:SPLIT]): list transformations a 4-layer,
4M-parameter dLLM learns on a CPU, two of them with a propagating output structure and one control:
  dsort   sort 20-23 digits ascending: the answer is monotone, so one wrong early commit (a digit or a run
          boundary) forces every later position to shift or break monotonicity (propagates):
          "Q: sort 4 0 9 ...\nA:" -> "0 0 1 ... 9"                                     40-46 tokens
  lsort   sort 40-46 letters alphabetically (same structure, 26 values, 1 token per item):
          "Q: sort q c a ...\nA:" -> "a a c ... z"                                     40-46 tokens
  lrev    reverse 40-46 letters (every output item depends on the prompt only: the control family):
          "Q: reverse j g e ...\nA:" -> "... e g j"                                     40-46 tokens
The verbs and item formats are those of the short sort / reverse families, so the long models can start
from the tiny zoo models' weights (faircalib/training/recipes.py).

The first testbed set (`HARD_LONG_FAMILIES`, source builtin:longtasks-hard[:SPLIT]) is kept for larger
models: after 100 min of CPU training (2.2k steps, 6.7M tokens) both long zoo models were at chance on it
(item accuracy chain 1.3%, psum 9.8%, shift 25%, trace 4.5%; exact match 0%), so it could not serve as the
testbed on this machine:
  chain   5-step running arithmetic, every intermediate result written out; the previous result is
          the next step's first operand (propagates):
          "Q: 47+8-5+9-3+6=?\nA:" -> "47+8=55 55-5=50 50+9=59 59-3=56 56+6=62"          40 tokens
  psum    running sum mod 10 of 39-46 digits (each output digit = previous output + input digit;
          propagates):  "Q: psum 3814...\nA:" -> "3126..."                            40-47 tokens
  shift   each of 40-47 letters moved one along the alphabet, item by item (z -> a; independent
          items, the control family):  "Q: shift c f a z ...\nA:" -> "d g b a ..."      40-47 tokens
  trace   key-value lookup trace: 8 letter keys with digit values, then 13-15 keys to look up; the
          answer writes each lookup as key=value:
          "Q: a=3 b=7 ... h=8 ; c a h ...\nA:" -> "c=1 a=3 h=8 ..."                     39-45 tokens

The window these are trained and decoded with is `LONG_WINDOW` = 48 tokens (answer + at least one EOS),
so every answer fills >= 39/48 = 81% of it.
"""
from __future__ import annotations

import random
import string

LONG_FAMILIES = ("dsort", "lsort", "lrev")  # the testbed set (builtin:longtasks)
HARD_LONG_FAMILIES = ("chain", "psum", "shift", "trace")  # builtin:longtasks-hard
LONG_WINDOW = 48  # decoding window (gen_length) of the long-answer zoo models

_LETTERS = string.ascii_lowercase


def _chain(rng: random.Random) -> tuple[str, str]:
    """Start in 10..99, five single-digit +/- steps; every running total stays in 10..99 (two digits), so
    each step " ab+c=de" is exactly 8 tokens and the answer 40."""
    total = rng.randint(10, 99)
    q, steps = str(total), []
    for _ in range(5):
        d = rng.randint(1, 9)
        ops = [op for op, ok in (("+", total + d <= 99), ("-", total - d >= 10)) if ok]
        op = rng.choice(ops)
        new = total + d if op == "+" else total - d
        q += f"{op}{d}"
        steps.append(f"{total}{op}{d}={new}")
        total = new
    return f"{q}=?", " ".join(steps)


def _psum(rng: random.Random) -> tuple[str, str]:
    digits = [rng.randrange(10) for _ in range(rng.randint(39, 46))]
    out, s = [], 0
    for d in digits:
        s = (s + d) % 10
        out.append(str(s))
    return "psum " + "".join(map(str, digits)), "".join(out)


def _shift(rng: random.Random) -> tuple[str, str]:
    xs = [rng.choice(_LETTERS) for _ in range(rng.randint(40, 47))]
    ys = [_LETTERS[(_LETTERS.index(x) + 1) % 26] for x in xs]
    return "shift " + " ".join(xs), " ".join(ys)


def _trace(rng: random.Random) -> tuple[str, str]:
    keys = rng.sample(_LETTERS, 8)
    vals = {k: rng.randrange(10) for k in keys}
    looks = [rng.choice(keys) for _ in range(rng.randint(13, 15))]
    pairs = " ".join(f"{k}={vals[k]}" for k in keys)
    return f"{pairs} ; {' '.join(looks)}", " ".join(f"{k}={vals[k]}" for k in looks)


def _dsort(rng: random.Random) -> tuple[str, str]:
    xs = [rng.randrange(10) for _ in range(rng.randint(20, 23))]
    return "sort " + " ".join(map(str, xs)), " ".join(map(str, sorted(xs)))


def _lsort(rng: random.Random) -> tuple[str, str]:
    xs = [rng.choice(_LETTERS) for _ in range(rng.randint(40, 46))]
    return "sort " + " ".join(xs), " ".join(sorted(xs))


def _lrev(rng: random.Random) -> tuple[str, str]:
    xs = [rng.choice(_LETTERS) for _ in range(rng.randint(40, 46))]
    return "reverse " + " ".join(xs), " ".join(reversed(xs))


LONG_GENERATORS = {"dsort": _dsort, "lsort": _lsort, "lrev": _lrev,
                   "chain": _chain, "psum": _psum, "shift": _shift, "trace": _trace}
