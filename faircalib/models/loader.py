"""`load_dllm`: the one public way to get a model, its tokenizer and its adapter."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from faircalib.models.adapter import DLLMAdapter
from faircalib.models.base import DiffusionLM
from faircalib.models.config import DLLMConfig, read_config
from faircalib.models.io import load_model_dir, load_tokenizer, open_safetensors, weight_files
from faircalib.models.zoo import PREFIX, zoo_path

log = logging.getLogger(__name__)


@dataclass
class LoadedDLLM:
    model: DiffusionLM
    tokenizer: Any  # a transformers tokenizer, or None when the directory has none
    adapter: DLLMAdapter
    source: str
    path: Path

    @property
    def config(self) -> DLLMConfig:
        return self.model.config

    @property
    def mask_token_id(self) -> int:
        return self.model.mask_token_id

    @property
    def default_policy(self) -> str:
        return self.model.default_policy


def require_dllm(model: Any, api: str) -> DiffusionLM:
    """`model` when it is a faircalib DiffusionLM (LLaDAModel / DreamModel); otherwise a TypeError that
    says what `api` expects and how to get one from an official LLaDA / Dream directory."""
    if isinstance(model, DiffusionLM):
        return model
    how = ("load an official LLaDA or Dream directory with faircalib.models.load_dllm('/path/to/LLaDA-8B-Instruct') "
           "(native implementation, safetensors, no trust_remote_code) and pass its .model, or use a zoo model "
           "(load_dllm('zoo:tiny-llada'))")
    if isinstance(model, LoadedDLLM):
        raise TypeError(f"{api} expects a faircalib DiffusionLM, got a LoadedDLLM; pass its .model "
                        f"(faircalib.quantize_model takes the LoadedDLLM itself)")
    kind = type(model)
    name = f"{kind.__module__}.{kind.__qualname__}"
    hint = (" (a transformers model: faircalib quantizes its own native implementation of the same weights)"
            if kind.__module__.startswith("transformers") else "")
    raise TypeError(f"{api} expects a faircalib DiffusionLM (LLaDAModel or DreamModel), got {name}{hint}; {how}")


def resolve_source(source: str | Path) -> Path:
    """A zoo name (`zoo:tiny-llada`) or a local directory -> the directory."""
    s = str(source)
    return zoo_path(s) if s.startswith(PREFIX) else Path(s).expanduser()


def load_dllm(source: str | Path, dtype: torch.dtype | str | None = None,
              device: torch.device | str = "cpu", check_finite: bool = True) -> LoadedDLLM:
    """Load a LLaDA or Dream model from a Hugging Face-format directory or a zoo name.

    dtype (a torch dtype or auto | bfloat16 | float32 | float16, faircalib.devices.resolve_dtype) defaults to
    bfloat16 on CUDA and to the stored dtype on CPU. device may be "auto" (faircalib.devices.resolve_device).
    Raises ModelLoadError with a one-line reason
    (NonFiniteError naming the tensor when a weight is NaN/inf, unless check_finite=False).
    """
    from faircalib.devices import resolve_device, resolve_dtype

    path = resolve_source(source)
    device = resolve_device(device)
    model = load_model_dir(path, resolve_dtype(dtype, device), device, check_finite=check_finite)
    if device.type == "cpu" and model.dtype == torch.bfloat16:
        warn_emulated_bf16(str(source))
    return LoadedDLLM(model=model, tokenizer=load_tokenizer(path), adapter=DLLMAdapter(model),
                      source=str(source), path=path)


def warn_emulated_bf16(source: str) -> bool:
    """Log a warning (and return True) when a bf16 model is about to compute on a CPU that has no bf16
    units: torch's bf16 matmuls there are ~20x slower than float32 (faircalib.devices.cpu_bf16_slowdown).
    Decoding, probing, scoring and Stage II calibration substitute float32-speed GEMMs on the bf16 values
    (faircalib.bf16.fast_bf16); everything else (e.g. GPTQ's Hessian collection in float64) is unaffected."""
    from faircalib.devices import BF16_SLOW, cpu_bf16_slowdown

    slow = cpu_bf16_slowdown()
    if slow <= BF16_SLOW:
        return False
    log.warning("%s is bf16 on a CPU without bf16 units: torch's bf16 matmuls are %.0fx slower than float32 "
                "here, so faircalib runs its GEMMs as float32 GEMMs on the bf16 values (faircalib/bf16.py; "
                "still slower than a float32 model, ~1.3-1.7x in a forward); --dtype float32 on the CLI "
                "(resources.dtype: float32 in a job, dtype='float32' in load_dllm) is faster at twice the "
                "bytes, or use a CPU with AVX512-BF16/AMX or a GPU", source, slow)
    return True


_DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "F8_E4M3": 1, "F8_E5M2": 1, "BOOL": 1}


def inspect_model(source: str | Path) -> dict[str, Any]:
    """Describe a model directory from its config and safetensors headers, without loading weights."""
    path = resolve_source(source)
    cfg = read_config(path)
    files = weight_files(path)
    n_params, dtypes, nbytes = 0, {}, 0
    for f in files:
        with open_safetensors(f) as sf:
            for key in sf.keys():
                sl = sf.get_slice(key)
                numel = 1
                for d in sl.get_shape():
                    numel *= int(d)
                n_params += numel
                dt = sl.get_dtype()
                dtypes[dt] = dtypes.get(dt, 0) + numel
                nbytes += numel * _DTYPE_BYTES.get(dt, 4)
    from faircalib.models.io import ARCH_CLASSES

    cls = ARCH_CLASSES[cfg.arch]
    return {
        "source": str(source),
        "architecture": cfg.arch,
        "model_type": cfg.raw.get("model_type"),
        "layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.n_kv_heads,
        "d_ff": cfg.d_ff,
        "vocab_size": cfg.vocab_size,
        "parameters": n_params,
        "dtype": max(dtypes, key=dtypes.get).lower() if dtypes else None,
        "weight_bytes": nbytes,
        "shards": len(files),
        "mask_token_id": cfg.mask_token_id,
        "logits_shifted": cfg.logits_shifted,
        "default_policy": cls.default_policy,
        "tokenizer": load_tokenizer(path) is not None,
    }
