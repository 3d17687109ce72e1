"""Job/sweep config: the job file is the library's own settings (MethodConfig, ProbeConfig, CalibConfig,
EvalConfig) beside the service's fields; defaults are the library's; one-line errors naming the field
path and allowed values; JSON round trip; sweep expansion; submit-time task checks."""
from __future__ import annotations

import pytest
from faircalib.orchestrator.config import JobConfig, SweepConfig, load_job_file
from faircalib.orchestrator.stages import DEFAULT_REGISTRY, default_plan

from faircalib.calibrate import CalibConfig
from faircalib.errors import ConfigError
from faircalib.eval.settings import EvalConfig
from faircalib.pipeline import MethodConfig
from faircalib.probe import ProbeConfig


def test_defaults_are_the_librarys():
    cfg = JobConfig.from_dict({"model": "zoo:tiny-llada"})
    assert cfg.run == MethodConfig() and cfg.evaluation == EvalConfig()
    assert cfg.run.probe == ProbeConfig() and cfg.run.calibration == CalibConfig()
    # the drift this guards against: the service used to default to builtin:kjv:train
    assert cfg.run.calibration.data == CalibConfig().data == "builtin:mix:train"
    assert (cfg.method, cfg.bits) == ("faircalib", "w4a4")
    assert cfg.storage == "s3://faircalib/jobs" and cfg.name == "tiny-llada-faircalib-w4a4"


def test_one_spelling_every_bit_setting_and_separate_seeds():
    cfg = JobConfig.from_dict({"model": "m", "seed": 3, "probe": {"prior": {"reliability": "prob"}},
                               "calibration": {"data_seed": 7}})
    assert cfg.run.probe.prior.reliability == "prob"
    assert cfg.run.quant_config().seed == 3 and cfg.run.calibration.data_seed == 7
    for bits in ("w4a4", "w3a4", "w8a8", "w4a8", "w4a16", "w8a16"):
        assert JobConfig.from_dict({"model": "m", "method": "rtn", "bits": bits}).bits == bits


def test_round_trip_and_frozen():
    cfg = JobConfig.from_dict({"model": "/m", "method": "rtn", "bits": "w8a8", "labels": {"team": "q", "run": 3},
                               "probe": {"n_samples": 8, "prior": {"gamma": 3}},
                               "resources": {"gpus_per_worker": 0.25},
                               "evaluation": {"tasks": ["fidelity"]}, "storage": "file:///tmp/x/"})
    again = JobConfig.from_json(cfg.to_json())
    assert again == cfg
    assert cfg.storage == "file:///tmp/x" and cfg.labels == {"run": "3", "team": "q"}
    assert cfg.run.probe.prior.gamma == 3.0 and isinstance(cfg.run.probe.prior.gamma, float)
    assert {k for k in cfg.to_dict() if k != "format_version"} >= {"method", "bits", "seed", "probe", "calibration"}
    from dataclasses import FrozenInstanceError

    with pytest.raises(FrozenInstanceError):
        cfg.model = "other"


@pytest.mark.parametrize("data, expect", [
    ({"model": "m", "method": "gptq"}, "method: 'gptq' is not allowed; allowed: fp, rtn, quarot, flatquant, qdrop, faircalib"),
    ({"model": "m", "bits": "w5a8"}, "bits: 'w5a8' is not allowed; allowed: w4a4, w3a4, w8a8, w4a8, w4a16, w8a16"),
    ({"model": "m", "probe": {"steps": 0}}, "probe.steps: expected an integer in [1, 32767], got 0"),
    ({"model": "m", "probe": {"steps": "many"}}, "probe.steps: expected an integer in [1, 32767], got 'many'"),
    ({"model": "m", "probe": {"steps": 100000}}, "probe.steps: expected an integer in [1, 32767], got 100000"),
    ({"model": "m", "probe": {"prior": {"schedule": "cosine"}}},
     "probe.prior.schedule: 'cosine' is not allowed; allowed: early, uniform, late, none"),
    ({"model": "m", "probe": {"prior": {"reliability": "probability"}}},
     "probe.prior.reliability: 'probability' is not allowed; allowed: prob, neg_entropy, margin"),
    ({"model": "m", "probe": {"prior": {"a_min": 5}}}, "probe.prior.a_max: expected a number >= a_min (5.0), got 4.0"),
    ({"model": "m", "probe": {"stepz": 3}}, "probe.stepz: unknown field; allowed: prompts, n_samples, steps, window"),
    ({"model": "m", "probe": {"floor": 0.2}}, "probe.floor: unknown field"),  # floor is Stage II's
    ({"model": "m", "calibration": {"lr": 0}}, "calibration.lr: expected a number > 0.0, got 0"),
    ({"model": "m", "calibration": {"floor": -1}}, "calibration.floor: expected a number >= 0.0, got -1"),
    ({"model": "m", "qdrop_weighted": True}, "qdrop_weighted: applies to method 'qdrop' only"),
    ({"model": "m", "resources": {"gpus_per_worker": 1.5}}, "resources.gpus_per_worker: expected a number in [0, 1] or a whole number of GPUs, got 1.5"),
    ({"model": "m", "resources": {"probe_workers": 0}}, "resources.probe_workers: expected an integer >= 1, got 0"),
    ({"model": "m", "resources": {"dtype": "int8"}},
     "resources.dtype: expected one of auto, bfloat16, float32, float16, got 'int8'"),
    ({"model": "m", "storage": "gs://b/x"}, "storage: 'gs://b/x' has an unsupported scheme; expected s3://BUCKET[/PREFIX] or file:///ABSOLUTE/PATH"),
    ({"model": "m", "storage": "s3://B_ad/x"}, "storage: bucket 'B_ad' is not a valid S3 bucket name"),
    ({"model": "m", "storage": "file://rel/x"}, "storage: 'file://rel/x' must name an absolute path"),
    ({"model": "m", "evaluation": {"tasks": []}}, "evaluation.tasks: expected a non-empty list of task names, got []"),
    ({"model": "m", "evaluation": {"limit": 0}}, "evaluation.limit: expected an integer >= 1 or null, got 0"),
    ({"model": "m", "evaluation": {"mc_num": 0}}, "evaluation.mc_num: expected an integer >= 1, got 0"),
    ({"model": "m", "evaluation": {"check_greedy": "yes"}}, "evaluation.check_greedy: expected true or false, got 'yes'"),
    ({"model": "m", "evaluation": {"decoding": {"gen_len": 8}}},
     "evaluation.decoding.gen_len: unknown field; allowed: policy, steps, gen_length, block_length"),
    ({"model": "m", "evaluation": {"decoding": {"steps": 0}}}, "evaluation.decoding.steps: expected an integer in [1, 32767]"),
    ({"model": "m", "colour": "red"}, "colour: unknown field; allowed: model, name, labels, storage"),
    ({"method": "fp"}, "model: required field is missing"),
    (["model", "m"], "job file: expected a mapping of fields at the top level, got list"),
    ({"model": "m", "probe": [1]}, "probe: expected a mapping with fields prompts, n_samples, steps"),
    ({"model": "m", "name": "has space"}, "name: expected 1-100 characters [A-Za-z0-9_.-], got 'has space'"),
])
def test_errors_name_field_and_allowed_values(data, expect):
    with pytest.raises(ConfigError) as e:
        JobConfig.from_dict(data)
    msg = str(e.value)
    assert msg.startswith(expect), msg
    assert "\n" not in msg


def test_job_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: zoo:x\nprobe: {n_samples: 3\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+, column \d+") as e:
        load_job_file(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="cannot read it"):
        load_job_file(tmp_path / "missing.yaml")


def test_the_plan_comes_from_the_method_registry():
    plan = {m: default_plan(JobConfig.from_dict({"model": "m", "method": m}))
            for m in ("fp", "rtn", "quarot", "flatquant", "qdrop", "faircalib")}
    assert plan["fp"] == ["evaluate", "upload"]
    assert plan["faircalib"] == ["probe", "calibrate", "evaluate", "upload"]
    assert all(plan[m] == ["calibrate", "evaluate", "upload"] for m in ("rtn", "quarot", "flatquant", "qdrop"))
    weighted = JobConfig.from_dict({"model": "m", "method": "qdrop", "qdrop_weighted": True})
    assert default_plan(weighted) == ["probe", "calibrate", "evaluate", "upload"]


def test_sweep_expands_grid_and_collapses_irrelevant_probe_settings():
    sweep = SweepConfig.from_dict({
        "name": "s1", "base": {"storage": "file:///tmp/s", "probe": {"n_samples": 4, "prior": {"gamma": 3}}},
        "grid": {"model": ["zoo:a", "zoo:b"], "method": ["rtn", "faircalib"], "bits": ["w4a4", "w3a4"],
                 "probe": [{"prior": {"schedule": "early"}}, {"prior": {"schedule": "uniform"}},
                           {"prior": {"beta": 0.0}}]}})
    # rtn ignores probe settings: 2 models x 2 bits x 1; faircalib: 2 x 2 x 3
    assert len(sweep.jobs) == 4 + 12
    fc = [j.run.probe.prior for j in sweep.jobs if j.method == "faircalib"]
    assert {(p.schedule, p.beta) for p in fc} == {("early", 1.0), ("uniform", 1.0), ("early", 0.0)}
    assert all(p.gamma == 3.0 for p in fc)  # nested overrides merge into the base's section
    assert all(j.run.probe.n_samples == 4 for j in sweep.jobs)
    assert all(j.labels["sweep"] == "s1" for j in sweep.jobs)
    assert len({j.to_json() for j in sweep.jobs}) == len(sweep.jobs)
    # names carry every grid value (unique: status and results can tell the jobs apart)
    names = {j.name for j in sweep.jobs}
    assert len(names) == len(sweep.jobs)
    assert "s1-a-rtn-w3a4" in names and "s1-b-faircalib-w4a4-schedule-uniform" in names
    assert "s1-a-faircalib-w3a4-beta-0.0" in names
    assert {j.labels.get("probe") for j in sweep.jobs if j.method == "faircalib"} == {
        "schedule-early", "schedule-uniform", "beta-0.0"}


def test_sweep_errors_name_the_job():
    with pytest.raises(ConfigError, match=r"^sweep job 1 \(method=nope\): method: 'nope' is not allowed"):
        SweepConfig.from_dict({"base": {"model": "m"}, "grid": {"method": ["fp", "nope"]}})
    with pytest.raises(ConfigError, match=r"^sweep\.grid\.seeds: unknown field"):
        SweepConfig.from_dict({"base": {"model": "m"}, "grid": {"seeds": [1]}})


def test_lm_eval_task_names_are_checked_at_submit():
    """The offline suite's names and lm-eval's registry pass; anything else is one line listing what is
    offered; a suite member next to its group is rejected."""
    ok = {"model": "m", "method": "fp",
          "evaluation": {"tasks": ["fidelity", "faircalib_gen", "faircalib_tasks_mc", "piqa"], "limit": 4}}
    DEFAULT_REGISTRY.validate(JobConfig.from_dict(ok))
    bad = {**ok, "evaluation": {"tasks": ["fidelity", "faircalib_sum", "piqa"]}}
    with pytest.raises(ConfigError) as e:
        DEFAULT_REGISTRY.validate(JobConfig.from_dict(bad))
    msg = str(e.value)
    assert msg.startswith("evaluation.tasks[1]: 'faircalib_sum' is not a known task; offered: fidelity, "
                          "faircalib_suite, faircalib_gen, faircalib_mc, faircalib_arith, ")
    assert "faircalib_kjv_ppl" in msg and "any task or group in lm-eval's registry" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match=r"^evaluation\.tasks\[0\]: 'faircalib_kv' is already part of group "
                                          r"'faircalib_suite'; list one of them$"):
        DEFAULT_REGISTRY.validate(JobConfig.from_dict(
            {**ok, "evaluation": {"tasks": ["faircalib_kv", "faircalib_suite"]}}))
    DEFAULT_REGISTRY.validate(JobConfig.from_dict({"model": "m", "method": "fp"}))  # fidelity: no lm-eval lookup


def test_example_job_files_and_the_quickstart_job_are_valid():
    """infra/jobs/*.yaml and the built-in quickstart job pass every submit-time check."""
    from pathlib import Path

    from faircalib.orchestrator.config import load_sweep_file
    from faircalib.orchestrator.quickstart import quickstart_spec

    jobs = Path(__file__).resolve().parents[2] / "infra" / "jobs"
    for f in sorted(jobs.glob("*.yaml")):
        for cfg in (load_sweep_file(f).jobs if f.name.startswith("sweep") else [load_job_file(f)]):
            DEFAULT_REGISTRY.validate(cfg)
    qs = JobConfig.from_dict(quickstart_spec())
    DEFAULT_REGISTRY.validate(qs)
    assert (qs.model, qs.method, qs.bits, qs.storage) == ("zoo:tiny-llada", "faircalib", "w4a4", "s3://faircalib/jobs")
    assert qs.evaluation.lm_eval_tasks == ("faircalib_arith", "faircalib_tasks_mc")
