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


def decoding_defaults(source: str | Path, path: str | Path | None = None, *, required: bool = False) -> dict:
    """The one home of a model's default decoding settings (DecodeConfig fields: policy, gen_length,
    steps, ...), as recorded under "decoding" in its model card (accuracy in a card is measured with
    them): a zoo model's card; a model directory's model_card.json; a quantized checkpoint's meta
    (`decoding`, or the card of the model it was made `source`d from). {} when none is recorded, or a
    ModelLoadError with `required=True`. `path`: the resolved directory of a non-zoo source."""
    s = str(source)
    found: dict | None = None
    if s.startswith(PREFIX):
        found = _card_decoding(zoo_path(s))
    else:
        p = Path(path or s)
        found = _card_decoding(p)
        qc = p / "quant_config.json"
        if found is None and qc.is_file():
            meta = json.loads(qc.read_text()).get("meta") or {}
            src = str(meta.get("source") or "")
            if meta.get("decoding"):
                found = dict(meta["decoding"])
            elif src.startswith(PREFIX):
                try:
                    found = _card_decoding(zoo_path(src))
                except ModelLoadError:
                    found = None
            elif src and Path(src).is_dir():
                found = _card_decoding(Path(src))
    if not found and required:
        raise ModelLoadError(f"model {s!r} has no decoding settings in a model_card.json; regenerate the card "
                             f"with `faircalib zoo card` or pass the decoding settings explicitly")
    return dict(found or {})
