"""Job and sweep configuration: YAML -> typed, frozen, validated dataclasses.

Boundary: this module only parses and validates values (types, ranges, allowed choices). Whether a
method's stages are *offered* by this installation (their library calls exist) is decided by
`stages.check_offered`; whether a model or bucket is reachable is checked when the job starts.

Every error is a one-line `ConfigError` naming the field path (e.g. `probe.steps`) and the allowed
values. Defaults follow SPEC.md (the paper's settings where it gives them, ours otherwise).
"""
from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from faircalib.errors import ConfigError

METHODS = ("fp", "rtn", "quarot", "flatquant", "qdrop", "faircalib")
BITS = ("w4a4", "w3a4", "w8a8")
SCHEDULES = ("early", "uniform", "late", "none")  # SPEC §4 alpha(t): early-boost default + ablations
RELIABILITY = ("probability", "neg_entropy", "margin")
EVAL_TASKS_BUILTIN = ("fidelity",)  # masked-token NLL, KL and top-1 agreement to the FP model
DEFAULT_STORAGE = "s3://faircalib/jobs"
_LABEL_RE = re.compile(r"^[A-Za-z0-9_.\-/]{1,63}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


# ---------------------------------------------------------------- value checks (one-line errors)
def _fail(path: str, expected: str, value: Any) -> None:
    raise ConfigError(f"{path}: expected {expected}, got {value!r}")


def _int(path: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, _range_text("an integer", lo, hi), value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        _fail(path, _range_text("an integer", lo, hi), value)
    return value


def _float(path: str, value: Any, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(path, _range_text("a number", lo, hi, lo_open), value)
    v = float(value)
    if math.isnan(v) or (lo is not None and (v < lo or (lo_open and v == lo))) or (hi is not None and v > hi):
        _fail(path, _range_text("a number", lo, hi, lo_open), value)
    return v


def _range_text(kind: str, lo, hi, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"{kind} in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f"{kind} {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{kind} <= {hi}"
    return kind


def _choice(path: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{path}: {value!r} is not allowed; allowed: {', '.join(allowed)}")
    return value


def _str(path: str, value: Any, what: str = "a non-empty string") -> str:
    if not isinstance(value, str) or not value.strip():
        _fail(path, what, value)
    return value


def _set(obj, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalise a frozen dataclass field in __post_init__


# ---------------------------------------------------------------- sections
@dataclass(frozen=True)
class ProbeSettings:
    """Stage I (SPEC §4). Paper: 512 GSM8K prompts, T = L = 256; alpha = a_min + (a_max-a_min) u^gamma."""
    prompts: str = "builtin:tasks:probe"
    n: int = 512
    steps: int = 256
    window: int = 256
    schedule: str = "early"
    a_min: float = 1.0
    a_max: float = 4.0
    gamma: float = 2.0
    beta: float = 1.0
    reliability: str = "probability"
    floor: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        p = "probe"
        _str(f"{p}.prompts", self.prompts, "a prompt source (builtin:tasks[:SPLIT], PATH.txt|.jsonl, hf:REPO...)")
        _int(f"{p}.n", self.n, 1)
        _int(f"{p}.steps", self.steps, 1)
        _int(f"{p}.window", self.window, 1)
        _choice(f"{p}.schedule", self.schedule, SCHEDULES)
        _set(self, "a_min", _float(f"{p}.a_min", self.a_min, 0.0))
        _set(self, "a_max", _float(f"{p}.a_max", self.a_max, 0.0))
        if self.a_max < self.a_min:
            raise ConfigError(f"probe.a_max: expected a number >= probe.a_min ({self.a_min}), got {self.a_max}")
        _set(self, "gamma", _float(f"{p}.gamma", self.gamma, 0.0))
        _set(self, "beta", _float(f"{p}.beta", self.beta, 0.0))
        _choice(f"{p}.reliability", self.reliability, RELIABILITY)
        _set(self, "floor", _float(f"{p}.floor", self.floor, 0.0))
        _int(f"{p}.seed", self.seed, 0)
        if self.schedule == "none" and self.beta == 0.0:
            raise ConfigError("probe: schedule 'none' with beta 0 leaves no term in the prior; "
                              "set probe.beta > 0 or a schedule in early, uniform, late")


@dataclass(frozen=True)
class CalibrationSettings:
    """Stage II data and optimiser (SPEC §3; paper 128 x 1024 tokens, FlatQuant optimiser defaults)."""
    data: str = "builtin:kjv:train"
    n: int = 128
    seq_len: int = 1024
    epochs: int = 15
    batch_size: int = 4
    lr: float = 5e-3
    seed: int = 0

    def __post_init__(self) -> None:
        p = "calibration"
        _str(f"{p}.data", self.data, "a text source (builtin:kjv[:SPLIT], builtin:mix, PATH, hf:REPO...)")
        _int(f"{p}.n", self.n, 1)
        _int(f"{p}.seq_len", self.seq_len, 2)
        _int(f"{p}.epochs", self.epochs, 0)
        _int(f"{p}.batch_size", self.batch_size, 1)
        _set(self, "lr", _float(f"{p}.lr", self.lr, 0.0, lo_open=True))
        _int(f"{p}.seed", self.seed, 0)


DECODE_FIELDS = ("policy", "steps", "gen_length", "block_length", "temperature", "alg_temp", "eps", "schedule")


@dataclass(frozen=True)
class EvaluationSettings:
    """Which evaluations the eval actors run, on the FP model and (quantizing methods) the checkpoint.

    tasks: `fidelity` (masked-token NLL / KL / top-1 agreement on `n` x `seq_len` tokens of `data`,
    held out from probe/calibration) and lm-eval task or group names, run through
    faircalib.eval.harness.run_lm_eval: the offline suite (faircalib_suite, faircalib_gen, faircalib_mc,
    faircalib_arith, ...) or lm-eval's own registry (piqa, hellaswag, ...: they need their datasets).
    The lm-eval knobs (limit, mc_num, batch sizes, greedy check, bootstrap, decoding) apply to every
    lm-eval task; `decoding` overrides the model card's decoding defaults (DecodeConfig fields).
    Names are checked against what the installation offers at submit (stages.check_offered)."""
    tasks: tuple[str, ...] = ("fidelity",)
    data: str = "builtin:kjv:heldout"
    n: int = 32
    seq_len: int = 256
    seed: int = 0
    limit: int | None = None
    mc_num: int = 128
    batch_size: int = 32
    gen_batch_size: int = 16
    check_greedy: bool = True
    bootstrap_iters: int = 1000
    decoding: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = "evaluation"
        tasks = self.tasks
        if isinstance(tasks, str):
            tasks = (tasks,)
        if not isinstance(tasks, (list, tuple)) or not tasks:
            _fail(f"{p}.tasks", "a non-empty list of task names", self.tasks)
        for i, t in enumerate(tasks):
            _str(f"{p}.tasks[{i}]", t, "a task name")
        if len(set(tasks)) != len(tasks):
            raise ConfigError(f"{p}.tasks: duplicate task names in {list(tasks)}")
        _set(self, "tasks", tuple(tasks))
        _str(f"{p}.data", self.data, "a held-out text source")
        _int(f"{p}.n", self.n, 1)
        _int(f"{p}.seq_len", self.seq_len, 2)
        _int(f"{p}.seed", self.seed, 0)
        if self.limit is not None:
            _int(f"{p}.limit", self.limit, 1)
        _int(f"{p}.mc_num", self.mc_num, 1)
        _int(f"{p}.batch_size", self.batch_size, 1)
        _int(f"{p}.gen_batch_size", self.gen_batch_size, 1)
        if not isinstance(self.check_greedy, bool):
            _fail(f"{p}.check_greedy", "true or false", self.check_greedy)
        _int(f"{p}.bootstrap_iters", self.bootstrap_iters, 0)
        if not isinstance(self.decoding, Mapping):
            _fail(f"{p}.decoding", f"a mapping with fields among {', '.join(DECODE_FIELDS)}", self.decoding)
        _check_keys(f"{p}.decoding", self.decoding, list(DECODE_FIELDS))
        _set(self, "decoding", dict(sorted(self.decoding.items())))

    @property
    def lm_eval_tasks(self) -> tuple[str, ...]:
        return tuple(t for t in self.tasks if t not in EVAL_TASKS_BUILTIN)


def _check_gpus(path: str, value: Any) -> float:
    v = _float(path, value, 0.0)
    if v > 1 and v != int(v):  # Ray: fractional GPU requests must be <= 1
        _fail(path, "a number in [0, 1] or a whole number of GPUs", value)
    return v


@dataclass(frozen=True)
class Resources:
    """Ray resource requests. GPUs fall back to CPU when the cluster has none (recorded as an event)."""
    probe_workers: int = 2
    gpus_per_worker: float = 1.0
    cpus_per_worker: float = 1.0
    probe_shard_size: int = 16
    calibration_gpus: float = 1.0
    eval_workers: int = 1
    max_retries: int = 2

    def __post_init__(self) -> None:
        p = "resources"
        _int(f"{p}.probe_workers", self.probe_workers, 1)
        _set(self, "gpus_per_worker", _check_gpus(f"{p}.gpus_per_worker", self.gpus_per_worker))
        _set(self, "cpus_per_worker", _float(f"{p}.cpus_per_worker", self.cpus_per_worker, 0.0, lo_open=True))
        _int(f"{p}.probe_shard_size", self.probe_shard_size, 1)
        _set(self, "calibration_gpus", _check_gpus(f"{p}.calibration_gpus", self.calibration_gpus))
        _int(f"{p}.eval_workers", self.eval_workers, 1)
        _int(f"{p}.max_retries", self.max_retries, 0, 10)


def check_storage_uri(path: str, uri: Any) -> str:
    """`s3://bucket[/prefix]` or `file:///absolute/path` (syntax only; reachability is checked at run)."""
    allowed = "s3://BUCKET[/PREFIX] or file:///ABSOLUTE/PATH"
    uri = _str(path, uri, allowed)
    if uri.startswith("s3://"):
        bucket = uri[5:].split("/", 1)[0]
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
            raise ConfigError(f"{path}: bucket {bucket!r} is not a valid S3 bucket name "
                              "(3-63 characters: lowercase letters, digits, '.', '-'); expected " + allowed)
    elif uri.startswith("file://"):
        if not uri[7:].startswith("/"):
            raise ConfigError(f"{path}: {uri!r} must name an absolute path; expected {allowed}")
    else:
        raise ConfigError(f"{path}: {uri!r} has an unsupported scheme; expected {allowed}")
    return uri.rstrip("/")


_SECTIONS: dict[str, type] = {"probe": ProbeSettings, "calibration": CalibrationSettings,
                              "evaluation": EvaluationSettings, "resources": Resources}


@dataclass(frozen=True)
class JobConfig:
    """One calibration job: a model, a method at a bit setting, and how to run and store it."""
    model: str
    method: str = "faircalib"
    bits: str = "w4a4"
    name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    resources: Resources = field(default_factory=Resources)
    storage: str = DEFAULT_STORAGE

    def __post_init__(self) -> None:
        _str("model", self.model, "a model directory or zoo:NAME")
        _choice("method", self.method, METHODS)
        _choice("bits", self.bits, BITS)
        if not isinstance(self.labels, Mapping):
            _fail("labels", "a mapping of label -> value", self.labels)
        for k, v in self.labels.items():
            if not isinstance(k, str) or not _LABEL_RE.match(k):
                _fail(f"labels.{k}", "a label key of 1-63 characters [A-Za-z0-9_.-/]", k)
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                _fail(f"labels.{k}", "a string or number", v)
        _set(self, "labels", {k: str(v) for k, v in sorted(self.labels.items())})
        for key, cls in _SECTIONS.items():
            if not isinstance(getattr(self, key), cls):
                _fail(key, f"a {key} section (mapping)", getattr(self, key))
        _set(self, "storage", check_storage_uri("storage", self.storage))
        if not self.name:
            model = self.model.removeprefix("zoo:").rstrip("/").split("/")[-1] or "model"
            tail = self.method if self.method == "fp" else f"{self.method}-{self.bits}"
            _set(self, "name", re.sub(r"[^A-Za-z0-9_.\-]", "_", f"{model}-{tail}")[:100])
        elif not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            _fail("name", "1-100 characters [A-Za-z0-9_.-]", self.name)

    @property
    def uses_probe(self) -> bool:
        return self.method == "faircalib"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = dict(self.labels)
        d["evaluation"]["tasks"] = list(self.evaluation.tasks)
        d["evaluation"]["decoding"] = dict(self.evaluation.decoding)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> JobConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"job file: expected a mapping of fields at the top level, got {type(data).__name__}")
        _check_keys("job", data, [f.name for f in fields(cls)])
        if "model" not in data:
            raise ConfigError("model: required field is missing (a model directory or zoo:NAME)")
        kwargs = dict(data)
        for key, section in _SECTIONS.items():
            if key in kwargs:
                kwargs[key] = _section(section, key, kwargs[key])
        if kwargs.get("labels") is None:
            kwargs.pop("labels", None)
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> JobConfig:
        return cls.from_dict(json.loads(text))


def _check_keys(path: str, data: Mapping, allowed: list[str]) -> None:
    for k in data:
        if k not in allowed:
            raise ConfigError(f"{path}: unknown field {k!r}; allowed: {', '.join(allowed)}")


def _section(cls: type, key: str, value: Any):
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        _fail(key, f"a mapping with fields {', '.join(f.name for f in fields(cls))}", value)
    _check_keys(key, value, [f.name for f in fields(cls)])
    return cls(**value)


def _load_yaml(path: str | Path) -> tuple[Any, str]:
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"job file {str(p)!r}: cannot read it ({e.strerror or e}); check the path") from e
    try:
        return yaml.safe_load(text), text
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"job file {str(p)!r}: invalid YAML{where}: {problem}") from e


def load_job_file(path: str | Path) -> JobConfig:
    data, _ = _load_yaml(path)
    return JobConfig.from_dict(data)


# ---------------------------------------------------------------- sweeps
GRID_KEYS = ("model", "method", "bits", "probe", "calibration")


@dataclass(frozen=True)
class SweepConfig:
    """`base` job fields x `grid` (models x methods x bits x probe settings x calibration settings).

    grid.model/method/bits are lists of values; grid.probe/calibration are lists of partial section
    overrides. Probe overrides only matter for methods that probe, so duplicates collapse."""
    name: str
    jobs: tuple[JobConfig, ...]

    @classmethod
    def from_dict(cls, data: Any) -> SweepConfig:
        if not isinstance(data, Mapping):
            raise ConfigError("sweep file: expected a mapping with fields name, base, grid")
        _check_keys("sweep", data, ["name", "base", "grid"])
        name = data.get("name") or "sweep"
        if not isinstance(name, str) or not _NAME_RE.match(name):
            _fail("sweep.name", "1-100 characters [A-Za-z0-9_.-]", name)
        base = data.get("base") or {}
        grid = data.get("grid") or {}
        if not isinstance(base, Mapping):
            _fail("sweep.base", "a mapping of job fields", base)
        if not isinstance(grid, Mapping):
            _fail("sweep.grid", f"a mapping with lists under {', '.join(GRID_KEYS)}", grid)
        _check_keys("sweep.grid", grid, list(GRID_KEYS))
        axes: list[list[tuple[str, Any]]] = []
        for key in GRID_KEYS:
            values = grid.get(key)
            if values is None:
                continue
            if not isinstance(values, list) or not values:
                _fail(f"sweep.grid.{key}", "a non-empty list", values)
            axes.append([(key, v) for v in values])
        jobs: list[JobConfig] = []
        seen: set[str] = set()
        for i, combo in enumerate(itertools.product(*axes)):
            job = dict(base)
            for key, v in combo:
                if key in ("probe", "calibration"):
                    if not isinstance(v, Mapping):
                        _fail(f"sweep.grid.{key}", "a list of mappings (partial section overrides)", v)
                    job[key] = {**(job.get(key) or {}), **v}
                else:
                    job[key] = v
            try:
                cfg = JobConfig.from_dict(job)
            except ConfigError as e:
                raise ConfigError(f"sweep job {i} ({', '.join(f'{k}={v}' for k, v in combo)}): {e}") from e
            if not cfg.uses_probe:  # probe overrides are irrelevant: collapse duplicates
                cfg = replace(cfg, probe=ProbeSettings(**(base.get("probe") or {})))
            key = cfg.to_json()
            if key not in seen:
                seen.add(key)
                jobs.append(replace(cfg, labels={**cfg.labels, "sweep": name}))
        return cls(name=name, jobs=tuple(jobs))


def load_sweep_file(path: str | Path) -> SweepConfig:
    data, _ = _load_yaml(path)
    return SweepConfig.from_dict(data)
