"""The project's own tiny dLLMs (trained by `faircalib zoo train`), shipped inside the package in the
official directory layout and loadable as `zoo:NAME`."""
from __future__ import annotations

import json
from pathlib import Path

from faircalib.errors import ModelLoadError

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"
PREFIX = "zoo:"


def zoo_names() -> list[str]:
    if not ZOO_DIR.is_dir():
        return []
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / "config.json").is_file())


def zoo_path(name: str) -> Path:
    name = name.removeprefix(PREFIX)
    path = ZOO_DIR / name
    if not (path / "config.json").is_file():
        have = ", ".join(PREFIX + n for n in zoo_names()) or "none yet (train one with `faircalib zoo train`)"
        raise ModelLoadError(f"unknown zoo model {PREFIX + name!r}; available: {have}")
    return path


def model_card(name: str) -> dict:
    card = zoo_path(name) / "model_card.json"
    return json.loads(card.read_text()) if card.is_file() else {}


def decoding_defaults(name: str) -> dict:
    """The zoo model's default decoding settings (DecodeConfig fields: policy, gen_length, steps, ...),
    as recorded under "decoding" in its model card; accuracy in the card is measured with these."""
    card = model_card(name)
    if "decoding" not in card:
        raise ModelLoadError(f"zoo model {PREFIX + name.removeprefix(PREFIX)!r} has no decoding settings in its "
                             f"model_card.json; regenerate the card with `faircalib zoo card`")
    return dict(card["decoding"])
