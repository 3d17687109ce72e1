"""Decoding defaults for a model source: the settings `faircalib probe / quantize / eval` and
`faircalib.quantize_model` use when the user sets none, and where they came from.

    d = model_decoding("zoo:tiny-llada")       # DecodingDefaults(values={...}, origin="model card of zoo:tiny-llada")
    d = model_decoding("/models/LLaDA-8B-Instruct")   # the LLaDA family's documented defaults

Lookup order (first hit wins):
  1.-2. what is recorded (faircalib.models.zoo.recorded_decoding, the one home of that lookup): a zoo
     model's card or a directory's own model_card.json; a quantized checkpoint's meta (`decoding`, or
     the card of the model it was quantized from);
  3. the family's documented defaults (`FAMILY_DECODING`, by the directory's config.json), with the keys
     the directory's generation_config.json sets (Dream ships one: steps, alg, temperature, ...) on top.

`values` holds DecodeConfig fields only; documented settings DecodeConfig has no field for (e.g. Dream's
top_p before the sampler supports it) are kept in `unsupported` so callers can say what was left out.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from faircalib.errors import ModelLoadError

# The families' documented decoding settings. Sources:
#  LLaDA: ML-GSAI/LLaDA generate.py, `generate(model, prompt, steps=128, gen_length=128, block_length=128,
#         temperature=0., remasking='low_confidence')` (the function's defaults; its chat demo uses
#         block_length=32), and the README FAQ: "LLaDA achieves optimal performance when the number of
#         sampling steps equals the response length". block_length is left unset (= gen_length, one
#         block), so overriding gen_length alone stays consistent.
#  Dream: the Dream README demo, `model.diffusion_generate(..., max_new_tokens=512, steps=512,
#         temperature=0.2, top_p=0.95, alg="entropy", alg_temp=0.)`, plus top_k=50: the call passes no
#         top_k, and Dream's generation config is built from config.json (`from_model_config`), whose
#         transformers generation defaults include top_k=50, so the reference decode filters to the top
#         50 logits (before the confidence: even greedy `entropy` decodes depend on it); a directory's
#         generation_config.json (e.g. Dream-v0-Instruct-7B ships steps, alg, temperature, top_p) overrides
#         what it sets.
FAMILY_DECODING: dict[str, dict[str, Any]] = {
    "llada": {"policy": "low_confidence", "steps": 128, "gen_length": 128, "temperature": 0.0},  # one block
    "dream": {"policy": "entropy", "steps": 512, "gen_length": 512, "temperature": 0.2, "top_p": 0.95,
              "top_k": 50, "alg_temp": 0.0},
}
FAMILY_SOURCES = {"llada": "LLaDA family defaults (ML-GSAI/LLaDA generate.py)",
                  "dream": "Dream family defaults (Dream README demo)"}
# generation_config.json key -> DecodeConfig field (Dream's diffusion_generate names)
_GENERATION_KEYS = {"steps": "steps", "max_new_tokens": "gen_length", "alg": "policy", "temperature": "temperature",
                    "alg_temp": "alg_temp", "eps": "eps", "top_p": "top_p", "top_k": "top_k"}


@dataclass(frozen=True)
class DecodingDefaults:
    values: dict[str, Any]                 # DecodeConfig fields
    origin: str                            # where they came from, for the user ("model card of zoo:tiny-llada")
    unsupported: dict[str, Any] = field(default_factory=dict)  # documented, but DecodeConfig has no such field
    recorded: bool = True                  # False: the family's documented defaults (nothing model-specific)

    def describe(self) -> str:
        keys = ("policy", "steps", "gen_length", "block_length", "temperature", "alg_temp", "top_k", "top_p")
        shown = " ".join(f"{k}={self.values[k]}" for k in keys if self.values.get(k) is not None)
        extra = ("; not applied (no DecodeConfig field): "
                 + ", ".join(f"{k}={v}" for k, v in self.unsupported.items())) if self.unsupported else ""
        return f"{shown} ({self.origin}{extra})"


def _decode_fields() -> set[str]:
    from faircalib.diffusion.config import DecodeConfig

    return {f.name for f in fields(DecodeConfig)}


def _split(values: dict[str, Any], origin: str, recorded: bool = True) -> DecodingDefaults:
    known = _decode_fields()
    return DecodingDefaults(values={k: v for k, v in values.items() if k in known}, origin=origin,
                            unsupported={k: v for k, v in values.items() if k not in known}, recorded=recorded)


def _generation_config(path: Path) -> dict[str, Any]:
    """The decoding keys a generation_config.json sets ({field: value}; an explicit null = unset)."""
    f = path / "generation_config.json"
    if not f.is_file():
        return {}
    try:
        raw = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {name: raw[key] for key, name in _GENERATION_KEYS.items() if key in raw}


def family_decoding(path: str | Path) -> DecodingDefaults:
    """The documented defaults of the directory's family (its config.json), generation_config.json on top."""
    from faircalib.models.config import read_config

    path = Path(path)
    arch = read_config(path).arch
    values = dict(FAMILY_DECODING[arch])
    gen = _generation_config(path)
    origin = FAMILY_SOURCES[arch]
    if gen:
        for k, v in gen.items():
            if v is None:
                values.pop(k, None)  # e.g. "top_p": null - the model ships without it
            else:
                values[k] = v
        origin += f" + {path.name}/generation_config.json"
    if arch == "dream":
        values.pop("block_length", None)  # no semi-AR blocks on the Dream schedule
    return _split(values, origin, recorded=False)


def model_decoding(source: str | Path, path: str | Path | None = None) -> DecodingDefaults:
    """Decoding defaults for SOURCE (zoo:NAME, a model directory, or a quantized checkpoint directory)
    and where they came from: the recorded ones (faircalib.models.zoo.recorded_decoding: model card,
    checkpoint meta), else the family's documented defaults (`family_decoding`). `path` is the resolved
    directory when the caller has it. ModelLoadError when nothing identifies the model."""
    from faircalib.models.zoo import PREFIX, recorded_decoding, zoo_path

    found = recorded_decoding(source, path)
    if found:
        return _split(dict(found[0]), found[1])
    s = str(source)
    p = zoo_path(s) if s.startswith(PREFIX) else Path(path or s).expanduser()
    if not (p / "config.json").is_file():
        raise ModelLoadError(f"{s}: no config.json (not a model directory) and no model card; pass a LLaDA/Dream "
                             f"directory, zoo:NAME or a quantized checkpoint")
    return family_decoding(p)


__all__ = ["FAMILY_DECODING", "DecodingDefaults", "family_decoding", "model_decoding"]
