"""Per-block calibration state on disk, so a killed Stage II run resumes at the next block.

Layout of a state directory:
  run.json                 the run's identity (key over configs, data, prior and model fingerprint)
  block_0000.safetensors   the block's learned quantization parameters (or GPTQ codes/scales)
  block_0000.json          its report (losses, time, fallback); written after the tensors = "done" marker
  loss_log.jsonl           one JSON line per finished block (epoch losses)
Files are written to a temporary name and renamed, so a kill never leaves a half-written block.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from faircalib.errors import CalibrationError
from faircalib.models.hashing import tensors_hash


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class BlockStateStore:
    """Reads and writes one run's per-block states in `directory`."""

    def __init__(self, directory: str | Path, run: dict[str, Any]):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = run["key"]
        path = self.dir / "run.json"
        if path.is_file():
            have = json.loads(path.read_text())
            if have.get("key") != self.key:
                raise CalibrationError(f"state_dir {self.dir} holds another calibration run (different configs, "
                                       f"data, prior or model); use an empty directory or delete it to restart")
        else:
            _atomic_write(path, (json.dumps(run, indent=2, default=str) + "\n").encode())

    def _paths(self, index: int) -> tuple[Path, Path]:
        return self.dir / f"block_{index:04d}.safetensors", self.dir / f"block_{index:04d}.json"

    def done(self, index: int) -> bool:
        return self._paths(index)[1].is_file()

    def load(self, index: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tpath, jpath = self._paths(index)
        info = json.loads(jpath.read_text())
        tensors = load_file(str(tpath)) if tpath.is_file() else {}
        if tensors_hash(tensors) != info.get("tensors_sha256"):
            raise CalibrationError(f"state_dir {self.dir}: block {index} state is corrupt (checksum mismatch); "
                                   f"delete block_{index:04d}.* to recompute that block")
        return tensors, info

    def save(self, index: int, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        tpath, jpath = self._paths(index)
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        tmp = tpath.with_name(tpath.name + ".tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, tpath)
        info = dict(info, tensors_sha256=tensors_hash(tensors))
        _atomic_write(jpath, (json.dumps(info, indent=2) + "\n").encode())
        with open(self.dir / "loss_log.jsonl", "a") as f:
            f.write(json.dumps({k: v for k, v in info.items() if k != "tensors_sha256"}) + "\n")
