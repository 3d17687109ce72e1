"""The embedded-default job behind `faircalib quickstart`: FAIR-Calib W4A4 on a tiny zoo model, sized for a
CPU (about a minute on 2 cores), plus the pieces the command strings together:

    storage = ensure_local_storage()          # the running local SeaweedFS, else start one (and say so)
    config, text = quickstart_job("zoo:tiny-llada")
    ... submit, run a scheduler for this job only, print the results ...
    storage.release(keep=False)               # stop the server again if we started it

Boundary: the job spec and the storage bookkeeping; the CLI (commands/quickstart.py) does the rest
with the store, the scheduler and the results table like every other command.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from faircalib.orchestrator.config import JobConfig

QUICKSTART_MODEL = "zoo:tiny-llada"
QUICKSTART_STORAGE = "s3://faircalib/jobs"
# Small decoding for models without a card (e.g. `faircalib models init-tiny` directories): the zoo
# models' own card decoding (gen_length = steps = 16) is used otherwise.
FALLBACK_DECODING = {"gen_length": 16, "steps": 16, "block_length": 16}


def quickstart_spec(model: str = QUICKSTART_MODEL) -> dict[str, Any]:
    """The built-in job (a plain dict, as a job YAML would hold it)."""
    tail = re.sub(r"[^A-Za-z0-9_.\-]", "_", model.removeprefix("zoo:").rstrip("/").split("/")[-1] or "model")
    spec: dict[str, Any] = {
        "name": f"quickstart-{tail}-faircalib-w4a4"[:100],
        "model": model,
        "method": "faircalib",
        "bits": "w4a4",
        # Stage I: 32 held-out-disjoint task prompts, T = L = 16 (the zoo models' answer window)
        "probe": {"prompts": "builtin:tasks:probe", "n_samples": 32, "steps": 16, "window": 16, "seed": 0},
        # Stage II: 16 x 128 tokens of the library's calibration text, 2 epochs per block
        "calibration": {"n": 16, "seq_len": 128, "epochs": 2, "batch_size": 4, "data_seed": 0},
        # fidelity (NLL / KL / top-1 vs FP on 8 x 128 held-out tokens) + two offline lm-eval tasks with 20
        # examples each (arithmetic exact match by diffusion decoding; 4-way multiple choice by masked
        # log-likelihood, exact when the answer has <= 4 tokens), on FP and on W4A4
        "evaluation": {"tasks": ["fidelity", "faircalib_arith", "faircalib_tasks_mc"], "data": "builtin:kjv:heldout",
                       "n": 8, "seq_len": 128, "limit": 20, "mc_num": 16, "check_greedy": False},
        # GPUs when the Ray cluster has them (two probe actors share one), else CPU (the job's events say so)
        "resources": {"probe_workers": 2, "probe_shard_size": 16, "gpus_per_worker": 0.5, "calibration_gpus": 1,
                      "cpus_per_worker": 1, "eval_workers": 1, "max_retries": 2},
        "storage": QUICKSTART_STORAGE,
        "labels": {"example": "quickstart"},
    }
    return spec


def quickstart_job(model: str = QUICKSTART_MODEL) -> tuple[JobConfig, str]:
    """(validated JobConfig, its YAML text) for `model`; models without recorded decoding defaults get
    FALLBACK_DECODING for the lm-eval generation task."""
    import yaml

    from faircalib.models import decoding_defaults, resolve_source

    spec = quickstart_spec(model)
    if not decoding_defaults(model, resolve_source(model)):
        spec["evaluation"]["decoding"] = dict(FALLBACK_DECODING)
    text = "# faircalib quickstart: the built-in job (copy it to a file to change it, then `faircalib submit`)\n"
    text += yaml.safe_dump(spec, sort_keys=False)
    return JobConfig.from_dict(spec), text


@dataclass
class LocalStorage:
    """Which S3 endpoint the quickstart's jobs use, and whether this process started it."""
    endpoint: str | None
    source: str                      # env var name, "faircalib storage up", or "started"
    started: bool = False
    state: dict | None = None

    def release(self, keep: bool) -> bool:
        """Stop the server if we started it and keep is False; True when it was stopped."""
        if self.started and not keep:
            from faircalib.service.seaweed import storage_down

            return storage_down()
        return False


def ensure_local_storage(port: int | None = None) -> LocalStorage:
    """An S3 endpoint configured in the environment is used as is; else the running local server;
    else start the local SeaweedFS server (port 8333, or a free one when 8333 is taken)."""
    from faircalib.service.seaweed import DEFAULT_S3_PORT, _port_free, free_port_pair
    from faircalib.service.storage import resolve_endpoint, storage_up

    endpoint, source = resolve_endpoint()
    if endpoint is not None:
        return LocalStorage(endpoint, source)
    if port is None:
        port = DEFAULT_S3_PORT if _port_free(DEFAULT_S3_PORT) and _port_free(DEFAULT_S3_PORT + 10000) \
            else free_port_pair()
    state = storage_up(port=port)
    return LocalStorage(state["endpoint"], "started", started=True, state=state)
