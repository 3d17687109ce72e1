"""Reading and writing model directories in the official Hugging Face layout:
`config.json` + `model.safetensors` (or shards `model-0000k-of-0000n.safetensors` with
`model.safetensors.index.json`) + tokenizer files. Safetensors only: pickle checkpoints are refused.
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from faircalib.errors import FaircalibError, ModelLoadError
from faircalib.finite import check_tensors
from faircalib.models.base import DiffusionLM
from faircalib.models.config import DLLMConfig
from faircalib.models.dream import DreamModel
from faircalib.models.llada import LLaDAModel

log = logging.getLogger(__name__)

ARCH_CLASSES: dict[str, type[DiffusionLM]] = {"llada": LLaDAModel, "dream": DreamModel}
INDEX_NAME = "model.safetensors.index.json"
# keys some exporters persist that carry no weights of ours (recomputed rotary tables)
_IGNORABLE_SUFFIXES = (".inv_freq", ".rotary_emb.inv_freq")


def build_model(cfg: DLLMConfig, device: torch.device | str | None = None,
                dtype: torch.dtype | None = None) -> DiffusionLM:
    """An uninitialised model of the config's architecture (use `init_weights` or load a state dict)."""
    with torch.device(device or "cpu"):
        model = ARCH_CLASSES[cfg.arch](cfg)
    return model.to(dtype) if dtype is not None else model


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files holding the weights, validated against the index when sharded."""
    index = directory / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ModelLoadError(f"{index}: not a valid safetensors index (needs a 'weight_map'); re-export the "
                                 f"checkpoint") from e
        files = sorted({directory / f for f in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelLoadError(f"{directory}: shards listed in {INDEX_NAME} are missing: {', '.join(missing[:5])}; "
                                 f"download every shard")
        return files
    files = sorted(directory.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickles:
        raise ModelLoadError(f"{directory}: only pickle checkpoints ({', '.join(pickles[:3])}) found; faircalib "
                             f"loads safetensors only (pickle can run code). Convert once in a trusted environment, "
                             f"e.g. save_file(torch.load(f, weights_only=True), 'model.safetensors')")
    raise ModelLoadError(f"{directory}: no *.safetensors weights found; a model directory needs config.json and "
                         f"safetensors weights")


@contextmanager
def open_safetensors(path: Path, error: type[FaircalibError] = ModelLoadError,
                     fix: str = "re-download or re-export it (a safetensors file that was cut short or overwritten)"):
    """safe_open(path) whose failures (a truncated or corrupt file: bad header, short data, unreadable
    tensor) are one-line `error`s naming the file and the fix, instead of a SafetensorError traceback."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as sf:
            yield _CheckedSafetensors(sf, path, error, fix)
    except (SafetensorError, OSError) as e:
        raise error(f"{path}: not a readable safetensors file ({_one_line(e)}); {fix}") from None


class _CheckedSafetensors:
    def __init__(self, sf, path: Path, error: type[FaircalibError], fix: str):
        self._sf, self._path, self._error, self._fix = sf, path, error, fix

    def keys(self):
        return self._sf.keys()

    def get_slice(self, key: str):
        return self._sf.get_slice(key)

    def get_tensor(self, key: str) -> torch.Tensor:
        try:
            return self._sf.get_tensor(key)
        except (SafetensorError, OSError, RuntimeError) as e:
            raise self._error(f"{self._path}: tensor {key} cannot be read ({_one_line(e)}); {self._fix}") from None


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


_FLOAT_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def stored_dtype(directory: str | Path) -> torch.dtype:
    """The floating dtype holding most of the directory's weights (read from the safetensors headers only)."""
    counts: dict[torch.dtype, int] = {}
    for f in weight_files(Path(directory)):
        with open_safetensors(f) as sf:
            for key in sf.keys():  # noqa: SIM118 (safe_open is not a dict)
                sl = sf.get_slice(key)
                dt = _FLOAT_DTYPES.get(sl.get_dtype())
                if dt is not None:
                    counts[dt] = counts.get(dt, 0) + int(torch.Size(sl.get_shape()).numel())
    return max(counts, key=counts.get) if counts else torch.float32


def load_state_dict_into(model: DiffusionLM, files: list[Path], dtype: torch.dtype,
                         device: torch.device | str, where: str, check_finite: bool = True) -> None:
    """Copy tensors from safetensors files into `model`, checking names and shapes first (and, with
    check_finite, that every value is finite: NonFiniteError naming the file and tensor)."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    seen: dict[str, torch.Tensor] = {}
    extra: list[str] = []
    for f in files:
        with open_safetensors(f) as sf:
            for key in sf.keys():
                if key not in expected:
                    if not key.endswith(_IGNORABLE_SUFFIXES):
                        extra.append(key)
                    continue
                t = sf.get_tensor(key)
                if tuple(t.shape) != tuple(expected[key]):
                    raise ModelLoadError(f"{where}: tensor {key} has shape {tuple(t.shape)} but config.json implies "
                                         f"{tuple(expected[key])}; config and weights do not belong together")
                if check_finite:
                    check_tensors([(key, t)], where=f"loading {f}",
                                  fix="the weights are corrupt or diverged; re-export or re-download them")
                seen[key] = t.to(device=device, dtype=dtype)
    missing = sorted(set(expected) - set(seen))
    if missing:
        raise ModelLoadError(f"{where}: {len(missing)} tensors missing from the checkpoint (e.g. {missing[0]}); "
                             f"the weights are incomplete or from another architecture")
    if extra:
        raise ModelLoadError(f"{where}: {len(extra)} unexpected tensors (e.g. {sorted(extra)[0]}); the weights do not "
                             f"match config.json's architecture")
    model.load_state_dict(seen, strict=True, assign=True)


def load_model_dir(directory: str | Path, dtype: torch.dtype | None = torch.float32,
                   device: torch.device | str = "cpu", check_finite: bool = True) -> DiffusionLM:
    """dtype None = the stored dtype (`stored_dtype`)."""
    from faircalib.models.config import read_config

    directory = Path(directory)
    cfg = read_config(directory)
    files = weight_files(directory)
    dtype = dtype or stored_dtype(directory)
    model = build_model(cfg, device="meta")
    load_state_dict_into(model, files, dtype, device, where=str(directory), check_finite=check_finite)
    return model.eval()


def save_model_dir(model: DiffusionLM, directory: str | Path, tokenizer=None,
                   max_shard_bytes: int | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write `model` in its family's official layout; shards (with an index) above `max_shard_bytes`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save(directory)
    sd = {k: (v.to(dtype) if dtype is not None else v).detach().contiguous().cpu()
          for k, v in model.state_dict().items()}
    if max_shard_bytes is None:
        save_file(sd, str(directory / "model.safetensors"), metadata={"format": "pt"})
    else:
        shards: list[dict[str, torch.Tensor]] = [{}]
        size = 0
        for k, v in sd.items():
            nbytes = v.numel() * v.element_size()
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][k] = v
            size += nbytes
        n = len(shards)
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            name = f"model-{i:05d}-of-{n:05d}.safetensors"
            save_file(shard, str(directory / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in shard})
        total = sum(v.numel() * v.element_size() for v in sd.values())
        (directory / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total},
                                                        "weight_map": weight_map}, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    return directory


def load_tokenizer(directory: str | Path):
    """The directory's tokenizer without remote code, or None when it ships none.

    Tries AutoTokenizer (trust_remote_code=False); for repos whose tokenizer_config names a custom class
    (Dream's `DreamTokenizer`) it falls back to the plain fast tokenizer built from tokenizer.json, or a
    Qwen2 BPE from vocab.json + merges.txt, with the special tokens from tokenizer_config.json.
    """
    directory = Path(directory)
    names = {p.name for p in directory.iterdir()}
    if not names & {"tokenizer.json", "tokenizer_config.json", "vocab.json"}:
        return None
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        if "tokenizer.json" in names:
            # the fast tokenizer file is self-contained; this path never reads config.json (whose
            # model_type transformers does not know) and never runs repository code
            return PreTrainedTokenizerFast.from_pretrained(str(directory))
        return AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False)
    except Exception as first:  # noqa: BLE001 - fall back to the plain tokenizer files below
        cfg = {}
        if "tokenizer_config.json" in names:
            cfg = json.loads((directory / "tokenizer_config.json").read_text())
        special = {k: v for k, v in cfg.items()
                   if k in ("bos_token", "eos_token", "pad_token", "unk_token", "mask_token") and isinstance(v, str)}
        if "tokenizer.json" in names:
            return PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"), **special)
        if {"vocab.json", "merges.txt"} <= names:
            from transformers import Qwen2Tokenizer

            return Qwen2Tokenizer(vocab_file=str(directory / "vocab.json"),
                                  merges_file=str(directory / "merges.txt"), **special)
        raise ModelLoadError(f"{directory}: tokenizer files present but unreadable without remote code ({first}); "
                             f"provide tokenizer.json") from first
