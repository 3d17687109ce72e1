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


def _card_decoding(path: Path) -> dict | None:
    card = path / "model_card.json"
    return dict(json.loads(card.read_text()).get("decoding") or {}) if card.is_file() else None


def recorded_decoding(source: str | Path, path: str | Path | None = None) -> tuple[dict, str] | None:
    """(decoding settings, where they were recorded) for SOURCE, or None: a zoo model's card; a model
    directory's model_card.json; a quantized checkpoint's meta (`decoding`, or the card of the model it
    was made `source`d from). `path`: the resolved directory of a non-zoo source."""
    s = str(source)
    if s.startswith(PREFIX):
        found = _card_decoding(zoo_path(s))
        return (found, f"model card of {s}") if found else None
    p = Path(path or s)
    found = _card_decoding(p)
    if found:
        return found, str(p / "model_card.json")
    qc = p / "quant_config.json"
    if qc.is_file():
        meta = json.loads(qc.read_text()).get("meta") or {}
        src = str(meta.get("source") or "")
        if meta.get("decoding"):
            return dict(meta["decoding"]), "the checkpoint's quant_config.json"
        inner = None
        if src.startswith(PREFIX):
            try:
                inner = _card_decoding(zoo_path(src))
            except ModelLoadError:
                inner = None
        elif src and Path(src).is_dir():
            inner = _card_decoding(Path(src))
        if inner:
            return inner, f"the model card of the checkpoint's source {src}"
    return None


def decoding_defaults(source: str | Path, path: str | Path | None = None, *, required: bool = False) -> dict:
    """The one home of a model's recorded default decoding settings (DecodeConfig fields: policy,
    gen_length, steps, ...), as recorded under "decoding" in its model card (accuracy in a card is
    measured with them): see `recorded_decoding`. {} when none is recorded, or a ModelLoadError with
    `required=True`. With the LLaDA / Dream families' documented defaults as the fallback (and where
    the values came from): faircalib.models.model_decoding."""
    found = recorded_decoding(source, path)
    if not found and required:
        raise ModelLoadError(f"model {str(source)!r} has no decoding settings in a model_card.json; regenerate the "
                             f"card with `faircalib zoo card` or pass the decoding settings explicitly")
    return dict(found[0]) if found else {}
