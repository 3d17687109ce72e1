"""Evaluation settings, without importing lm-eval:

`LMEvalSettings`   how the `faircalib` lm-eval model answers requests (Monte Carlo draws, batch sizes,
                   greedy check, context lengths, decoding overrides); faircalib.eval.lm.
`EvalConfig`       one evaluation run over named tasks (a job's `evaluation:` section): the lm-eval
                   knobs above plus the task list, the fidelity data (held-out text, n x seq_len, seed),
                   lm-eval's `limit` and bootstrap iterations. Run by faircalib.eval.run.evaluate_models.

Task names: `fidelity` (masked-token NLL / KL / top-1 agreement to the FP model, faircalib.eval.fidelity)
and lm-eval task or group names (the offline suite faircalib_suite / faircalib_gen / faircalib_arith /
..., or lm-eval's registry: piqa, hellaswag, ...). `check_task_names` validates them.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from faircalib.configs import Config, check_bool, check_int, check_keys, check_str, fail, set_field
from faircalib.diffusion.config import DECODE_FIELDS, DecodeConfig
from faircalib.errors import ConfigError

FIDELITY = "fidelity"
BUILTIN_TASKS = (FIDELITY,)  # computed by faircalib itself; every other name is an lm-eval task/group


@dataclass(frozen=True)
class LMEvalSettings(Config):
    """How FaircalibLM answers requests (see faircalib.eval.lm)."""

    mc_num: int = 128
    batch_size: int = 32  # masked rows per forward pass (loglikelihood / rolling)
    gen_batch_size: int = 16  # prompts decoded together (generate_until, is_greedy)
    seed: int = 0
    check_greedy: bool = True
    exact_when_cheap: bool = True
    max_length: int | None = None  # default: the model's max_seq_len
    rolling_context: int | None = None  # default: max_length // 2
    decoding: Mapping[str, Any] = field(default_factory=dict)  # DecodeConfig fields (unset -> model/card defaults)

    def __post_init__(self) -> None:
        for name in ("mc_num", "batch_size", "gen_batch_size"):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, 0)
        check_bool("check_greedy", self.check_greedy)
        check_bool("exact_when_cheap", self.exact_when_cheap)
        check_int("max_length", self.max_length, 4, optional=True)
        check_int("rolling_context", self.rolling_context, 0, optional=True)
        if not isinstance(self.decoding, Mapping):
            fail("decoding", f"a mapping with fields among {', '.join(DECODE_FIELDS)}", self.decoding)
        check_keys("decoding", self.decoding, DECODE_FIELDS)
        try:
            DecodeConfig.from_dict(dict(self.decoding))  # validates the values
        except ConfigError as e:
            raise e.within("decoding") from None
        set_field(self, "decoding", dict(sorted(self.decoding.items())))

    def lm_settings(self) -> LMEvalSettings:
        """Just the LMEvalSettings fields (of a subclass such as EvalConfig)."""
        return LMEvalSettings(**{f.name: getattr(self, f.name) for f in fields(LMEvalSettings)})


@dataclass(frozen=True)
class EvalConfig(LMEvalSettings):
    """One evaluation run (see the module docstring). `data`/`n`/`seq_len`/`seed` are the fidelity
    sequences (`seed` also seeds lm-eval); `limit` caps each lm-eval task's examples."""

    tasks: tuple[str, ...] = (FIDELITY,)
    data: str = "builtin:kjv:heldout"
    n: int = 32
    seq_len: int = 256
    limit: int | None = None
    bootstrap_iters: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        tasks = (self.tasks,) if isinstance(self.tasks, str) else self.tasks
        if not isinstance(tasks, (list, tuple)) or not tasks:
            fail("tasks", "a non-empty list of task names", list(tasks) if isinstance(tasks, tuple) else tasks)
        for i, t in enumerate(tasks):
            check_str(f"tasks[{i}]", t, "a task name")
        if len(set(tasks)) != len(tasks):
            raise ConfigError(f"tasks: duplicate task names in {list(tasks)}", field="tasks")
        set_field(self, "tasks", tuple(tasks))
        check_str("data", self.data, "a held-out text source")
        check_int("n", self.n, 1)
        check_int("seq_len", self.seq_len, 2)
        check_int("limit", self.limit, 1, optional=True)
        check_int("bootstrap_iters", self.bootstrap_iters, 0)

    @property
    def lm_eval_tasks(self) -> tuple[str, ...]:
        return tuple(t for t in self.tasks if t not in BUILTIN_TASKS)


FP_BASELINE_VERSION = 1  # bump when an FP result under an old key would mean something else


def fp_baseline_key(cfg: EvalConfig, task: str, model_hash: str, decoding: Mapping[str, Any] | None = None) -> str:
    """The cache key of the FP model's result on one task (an FP baseline is the same for every
    quantized variant of the model): sha256 over the model's weights hash, the task, and exactly the
    settings that task's FP result depends on. `fidelity`: its held-out data, n, seq_len and seed. An
    lm-eval task: limit, bootstrap iterations, the Monte Carlo / batch / greedy-check / context
    settings (LMEvalSettings) and the effective decoding (`decoding`: the model's defaults, overridden
    by cfg.decoding, as evaluate_models applies them)."""
    import hashlib
    import json

    if task == FIDELITY:
        settings: dict[str, Any] = {"data": cfg.data, "n": cfg.n, "seq_len": cfg.seq_len, "seed": cfg.seed}
    else:
        settings = {**cfg.lm_settings().to_dict(), "limit": cfg.limit, "bootstrap_iters": cfg.bootstrap_iters,
                    "decoding": {**dict(decoding or {}), **dict(cfg.decoding)}}
        settings.pop("format_version", None)
    blob = json.dumps({"v": FP_BASELINE_VERSION, "model": model_hash, "task": task, "settings": settings},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def _lm_eval_registry() -> frozenset[str]:
    from lm_eval.tasks import TaskManager

    return frozenset(TaskManager(include_defaults=True).all_tasks)  # indexing takes seconds: once per process


def unknown_tasks(names: list[str]) -> list[str]:
    """The names that are neither built in, nor in the offline suite, nor in lm-eval's registry (indexed
    only when a name is not ours and not in the `faircalib_` namespace)."""
    from faircalib.eval.suite import OWN_NAMES

    rest = [n for n in names if n not in OWN_NAMES and n not in BUILTIN_TASKS]
    ours = [n for n in rest if n.startswith("faircalib_")]  # our namespace: no registry lookup
    others = [n for n in rest if n not in ours]
    if not others:
        return ours
    known = _lm_eval_registry()
    return ours + [n for n in others if n not in known]


def check_task_names(tasks: tuple[str, ...], path: str = "tasks") -> None:
    """ConfigError naming the first task that is unknown, or a suite member listed with its group."""
    from faircalib.eval.suite import GROUPS, OWN_NAMES, SUITE_GROUP

    unknown = set(unknown_tasks(list(tasks)))
    order = sorted(OWN_NAMES, key=lambda n: (0 if n == SUITE_GROUP else 1 if n in GROUPS else 2, n))
    for i, t in enumerate(tasks):
        if t in unknown:
            raise ConfigError(f"{path}[{i}]: {t!r} is not a known task; offered: {', '.join(BUILTIN_TASKS + tuple(order))}"
                              f", or any task or group in lm-eval's registry (e.g. piqa, hellaswag, arc_easy, gsm8k; "
                              f"they need their datasets)", field=f"{path}[{i}]")
        for g in tasks:
            if g != t and t in GROUPS.get(g, ()):
                raise ConfigError(f"{path}[{i}]: {t!r} is already part of group {g!r}; list one of them",
                                  field=f"{path}[{i}]")
