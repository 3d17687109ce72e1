"""The job file: YAML -> a `JobConfig` made of the library's own settings classes, in one place.

    model: zoo:tiny-llada          # the service's own fields: model, name, labels, storage, resources
    method: faircalib              # method, bits, seed, qdrop_weighted, probe:, calibration: are the
    bits: w4a4                     #   fields of faircalib.pipeline.MethodConfig (probe: ProbeConfig,
    probe: {n_samples: 64, prior: {schedule: early}}          # calibration: CalibConfig), exactly
    calibration: {n: 32, seq_len: 128, epochs: 2}             # as the library spells them
    evaluation: {tasks: [fidelity, faircalib_arith], limit: 40}   # faircalib.eval.EvalConfig
    resources: {probe_workers: 2}

Every error is a one-line ConfigError naming the field path (`probe.steps: ...`) and the allowed values;
defaults are the library's (docs/method.md). Evaluation task names are checked at submit and start
(`check_job`), zoo names at submit, whether a model directory exists or a bucket is reachable when the
job starts.
"""
from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from faircalib.service.storage import check_storage_uri

from faircalib.configs import Config, check_float, check_int, check_keys, check_str, fail, set_field
from faircalib.errors import ConfigError
from faircalib.eval.settings import EvalConfig
from faircalib.pipeline import MethodConfig

DEFAULT_STORAGE = "s3://faircalib/jobs"
_LABEL_RE = re.compile(r"^[A-Za-z0-9_.\-/]{1,63}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
METHOD_KEYS = tuple(f.name for f in fields(MethodConfig))  # method, bits, seed, qdrop_weighted, probe, calibration


def _check_gpus(path: str, value: Any) -> float:
    v = check_float(path, value, 0.0)
    if v > 1 and v != int(v):  # Ray: fractional GPU requests must be <= 1
        fail(path, "a number in [0, 1] or a whole number of GPUs", value)
    return v


@dataclass(frozen=True)
class Resources(Config):
    """Ray resource requests. GPUs fall back to CPU when the cluster has none (recorded as an event).
    dtype: the FP model's dtype in the workers (faircalib.devices.resolve_dtype: auto = bfloat16 on a GPU, the
    stored dtype on CPU; float32 on a CPU without bf16 units, at twice the memory per worker)."""
    probe_workers: int = 2
    gpus_per_worker: float = 1.0
    cpus_per_worker: float = 1.0
    probe_shard_size: int = 16
    calibration_gpus: float = 1.0
    eval_workers: int = 1
    max_retries: int = 2
    dtype: str = "auto"

    def __post_init__(self) -> None:
        from faircalib.devices import DTYPE_CHOICES, resolve_dtype

        check_int("probe_workers", self.probe_workers, 1)
        set_field(self, "gpus_per_worker", _check_gpus("gpus_per_worker", self.gpus_per_worker))
        set_field(self, "cpus_per_worker", check_float("cpus_per_worker", self.cpus_per_worker, 0.0, lo_open=True))
        check_int("probe_shard_size", self.probe_shard_size, 1)
        set_field(self, "calibration_gpus", _check_gpus("calibration_gpus", self.calibration_gpus))
        check_int("eval_workers", self.eval_workers, 1)
        check_int("max_retries", self.max_retries, 0, 10)
        try:
            resolve_dtype(check_str("dtype", self.dtype))
        except ConfigError:
            fail("dtype", f"one of {DTYPE_CHOICES}", self.dtype)

    @property
    def threads(self) -> int:
        """torch threads per actor."""
        return max(1, int(self.cpus_per_worker))


@dataclass(frozen=True)
class JobConfig:
    """One calibration job: a model, one method run (`run`: the library's MethodConfig), its evaluation
    (the library's EvalConfig), and how to run and store it."""
    model: str
    run: MethodConfig = field(default_factory=MethodConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    resources: Resources = field(default_factory=Resources)
    name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    storage: str = DEFAULT_STORAGE

    def __post_init__(self) -> None:
        check_str("model", self.model, "a model directory or zoo:NAME")
        for key, cls in (("run", MethodConfig), ("evaluation", EvalConfig), ("resources", Resources)):
            if not isinstance(getattr(self, key), cls):
                fail(key, f"a {cls.__name__}", getattr(self, key))
        if not isinstance(self.labels, Mapping):
            fail("labels", "a mapping of label -> value", self.labels)
        for k, v in self.labels.items():
            if not isinstance(k, str) or not _LABEL_RE.match(k):
                fail(f"labels.{k}", "a label key of 1-63 characters [A-Za-z0-9_.-/]", k)
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                fail(f"labels.{k}", "a string or number", v)
        set_field(self, "labels", {k: str(v) for k, v in sorted(self.labels.items())})
        set_field(self, "storage", check_storage_uri("storage", self.storage))
        if not self.name:
            model = self.model.removeprefix("zoo:").rstrip("/").split("/")[-1] or "model"
            tail = self.method if not self.run.spec.quantizes else f"{self.method}-{self.bits}"
            set_field(self, "name", re.sub(r"[^A-Za-z0-9_.\-]", "_", f"{model}-{tail}")[:100])
        elif not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            fail("name", "1-100 characters [A-Za-z0-9_.-]", self.name)

    @property
    def method(self) -> str:
        return self.run.method

    @property
    def bits(self) -> str:
        return self.run.bits

    @property
    def uses_prior(self) -> bool:
        return self.run.uses_prior

    def to_dict(self) -> dict[str, Any]:
        """The job file's layout: the MethodConfig fields at the top level beside the service's own."""
        out = {k: v for k, v in self.run.to_dict().items() if k != "format_version"}
        out.update(model=self.model, name=self.name, labels=dict(self.labels), storage=self.storage,
                   evaluation=self.evaluation.to_dict(), resources=self.resources.to_dict())
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> JobConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"job file: expected a mapping of fields at the top level, got {type(data).__name__}")
        service = ("model", "name", "labels", "storage", "evaluation", "resources")
        check_keys("", data, service + METHOD_KEYS)
        if "model" not in data:
            raise ConfigError("model: required field is missing (a model directory or zoo:NAME)", field="model")
        run = MethodConfig.from_dict({k: v for k, v in data.items() if k in METHOD_KEYS})
        kwargs: dict[str, Any] = {k: data[k] for k in ("model", "name", "storage") if data.get(k) is not None}
        if data.get("labels") is not None:
            kwargs["labels"] = data["labels"]
        return cls(run=run, evaluation=EvalConfig.from_dict(data.get("evaluation"), "evaluation"),
                   resources=Resources.from_dict(data.get("resources"), "resources"), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> JobConfig:
        return cls.from_dict(json.loads(text))


def _load_yaml(path: str | Path) -> tuple[Any, str]:

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"job file {str(p)!r}: cannot read it ({e.strerror or e}); check the path") from e
    return parse_yaml(text, str(p)), text


def parse_yaml(text: str, name: str) -> Any:
    """YAML text -> data; ConfigError with the line and column of a syntax error."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"job file {name!r}: invalid YAML{where}: {problem}") from e


def load_job_file(path: str | Path) -> JobConfig:
    data, _ = _load_yaml(path)
    return JobConfig.from_dict(data)


def check_job(config: JobConfig) -> None:
    """The checks beyond the settings' own, at submit and when a job starts: evaluation task names
    (lm-eval's registry is indexed only for names that are not the offline suite's)."""
    from faircalib.eval.settings import check_task_names

    check_task_names(config.evaluation.tasks, "evaluation.tasks")


# ---------------------------------------------------------------- sweeps
GRID_KEYS = ("model", "method", "bits", "probe", "calibration")


def _deep_merge(base: Mapping, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


@dataclass(frozen=True)
class SweepConfig:
    """`base` job fields x `grid` (models x methods x bits x probe settings x calibration settings).

    grid.model/method/bits are lists of values; grid.probe/calibration are lists of partial section
    overrides (merged into base's, nested sections included). Probe overrides only matter for methods
    that use the prior, so duplicates collapse."""
    name: str
    jobs: tuple[JobConfig, ...]

    @classmethod
    def from_dict(cls, data: Any) -> SweepConfig:
        if not isinstance(data, Mapping):
            raise ConfigError("sweep file: expected a mapping with fields name, base, grid")
        check_keys("sweep", data, ["name", "base", "grid"])
        name = data.get("name") or "sweep"
        if not isinstance(name, str) or not _NAME_RE.match(name):
            fail("sweep.name", "1-100 characters [A-Za-z0-9_.-]", name)
        base = data.get("base") or {}
        grid = data.get("grid") or {}
        if not isinstance(base, Mapping):
            fail("sweep.base", "a mapping of job fields", base)
        if not isinstance(grid, Mapping):
            fail("sweep.grid", f"a mapping with lists under {', '.join(GRID_KEYS)}", grid)
        check_keys("sweep.grid", grid, GRID_KEYS)
        axes: list[list[tuple[str, Any]]] = []
        for key in GRID_KEYS:
            values = grid.get(key)
            if values is None:
                continue
            if not isinstance(values, list) or not values:
                fail(f"sweep.grid.{key}", "a non-empty list", values)
            axes.append([(key, v) for v in values])
        jobs: list[JobConfig] = []
        seen: set[str] = set()
        for i, combo in enumerate(itertools.product(*axes)):
            job = dict(base)
            for key, v in combo:
                if key in ("probe", "calibration"):
                    if not isinstance(v, Mapping):
                        fail(f"sweep.grid.{key}", "a list of mappings (partial section overrides)", v)
                    job[key] = _deep_merge(job.get(key) or {}, v)
                else:
                    job[key] = v
            try:
                cfg = JobConfig.from_dict(job)
            except ConfigError as e:
                raise ConfigError(f"sweep job {i} ({', '.join(f'{k}={v}' for k, v in combo)}): {e}") from e
            values = dict(combo)
            if not cfg.uses_prior:  # probe overrides are irrelevant: collapse duplicates
                base_probe = MethodConfig.from_dict({"probe": base.get("probe")}).probe
                cfg = replace(cfg, run=cfg.run.replace(probe=base_probe))
                values.pop("probe", None)
            key = json.dumps({k: v for k, v in cfg.to_dict().items() if k != "name"}, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            labels = {**cfg.labels, "sweep": name}
            for section in ("probe", "calibration"):  # the grid's setting, for status / results tables
                if section in values:
                    labels[section] = grid_slug(values[section])[:63] or "base"
            jobs.append(replace(cfg, labels=labels, name=_unique(sweep_job_name(name, cfg, values),
                                                                 {j.name for j in jobs})))
        return cls(name=name, jobs=tuple(jobs))


def grid_slug(override: Any) -> str:
    """A partial section override as name text: {prior: {schedule: early}, n_samples: 64} ->
    'schedule-early_n_samples-64' (leaf keys and values, in order)."""
    parts: list[str] = []

    def walk(v: Any, key: str) -> None:
        if isinstance(v, Mapping):
            for k, sub in v.items():
                walk(sub, str(k))
        else:
            parts.append(f"{key}-{v}" if key else str(v))

    walk(override, "")
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", "_".join(parts))


def sweep_job_name(sweep: str, cfg: JobConfig, values: Mapping[str, Any]) -> str:
    """<sweep>-<model>-<method>[-<bits>][-<probe setting>][-<calibration setting>]: every grid value."""
    model = cfg.model.removeprefix("zoo:").rstrip("/").split("/")[-1] or "model"
    parts = [sweep, model, cfg.method] + ([cfg.bits] if cfg.run.spec.quantizes else [])
    parts += [grid_slug(values[k]) for k in ("probe", "calibration") if k in values]
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", "-".join(p for p in parts if p))


def _unique(name: str, taken: set[str]) -> str:
    """Names are at most 100 characters; a clash (after truncation, or equal models in two spellings)
    gets a numeric suffix."""
    out, i = name[:100], 2
    while out in taken:
        out = f"{name[:100 - len(str(i)) - 1]}-{i}"
        i += 1
    return out


def load_sweep_file(path: str | Path) -> SweepConfig:
    data, _ = _load_yaml(path)
    return SweepConfig.from_dict(data)
