"""Job/sweep config: defaults from SPEC.md, one-line errors naming the field path and allowed values,
JSON round trip, sweep expansion, and the 'offered by this installation' check."""
from __future__ import annotations

import pytest
from faircalib.orchestrator.config import JobConfig, SweepConfig, load_job_file
from faircalib.orchestrator.stages import DEFAULT_REGISTRY, StageRegistry, StageResult, StageSpec

from faircalib.errors import ConfigError


def test_defaults_follow_spec():
    cfg = JobConfig.from_dict({"model": "zoo:tiny-llada"})
    assert (cfg.method, cfg.bits) == ("faircalib", "w4a4")
    p = cfg.probe
    assert (p.n, p.steps, p.window) == (512, 256, 256)  # paper: 512 prompts, T = L = 256
    assert (p.schedule, p.a_min, p.a_max, p.gamma, p.beta, p.reliability, p.floor) == \
        ("early", 1.0, 4.0, 2.0, 1.0, "probability", 0.1)
    c = cfg.calibration
    assert (c.n, c.seq_len, c.epochs, c.batch_size, c.lr) == (128, 1024, 15, 4, 5e-3)
    assert cfg.storage == "s3://faircalib/jobs"
    assert cfg.name == "tiny-llada-faircalib-w4a4"


def test_round_trip_and_frozen():
    cfg = JobConfig.from_dict({"model": "/m", "method": "rtn", "bits": "w8a8", "labels": {"team": "q", "run": 3},
                               "probe": {"n": 8, "gamma": 3}, "resources": {"gpus_per_worker": 0.25},
                               "evaluation": {"tasks": ["fidelity"]}, "storage": "file:///tmp/x/"})
    again = JobConfig.from_json(cfg.to_json())
    assert again == cfg
    assert cfg.storage == "file:///tmp/x" and cfg.labels == {"run": "3", "team": "q"}
    assert cfg.probe.gamma == 3.0 and isinstance(cfg.probe.gamma, float)
    from dataclasses import FrozenInstanceError

    with pytest.raises(FrozenInstanceError):
        cfg.method = "fp"


@pytest.mark.parametrize("data, expect", [
    ({"model": "m", "method": "gptq"}, "method: 'gptq' is not allowed; allowed: fp, rtn, quarot, flatquant, qdrop, faircalib"),
    ({"model": "m", "bits": "w4a8"}, "bits: 'w4a8' is not allowed; allowed: w4a4, w3a4, w8a8"),
    ({"model": "m", "probe": {"steps": 0}}, "probe.steps: expected an integer >= 1, got 0"),
    ({"model": "m", "probe": {"steps": "many"}}, "probe.steps: expected an integer >= 1, got 'many'"),
    ({"model": "m", "probe": {"schedule": "cosine"}}, "probe.schedule: 'cosine' is not allowed; allowed: early, uniform, late, none"),
    ({"model": "m", "probe": {"reliability": "p"}}, "probe.reliability: 'p' is not allowed; allowed: probability, neg_entropy, margin"),
    ({"model": "m", "probe": {"a_min": 5}}, "probe.a_max: expected a number >= probe.a_min (5.0), got 4.0"),
    ({"model": "m", "probe": {"stepz": 3}}, "probe: unknown field 'stepz'; allowed: prompts, n, steps, window"),
    ({"model": "m", "calibration": {"lr": 0}}, "calibration.lr: expected a number > 0.0, got 0"),
    ({"model": "m", "resources": {"gpus_per_worker": 1.5}}, "resources.gpus_per_worker: expected a number in [0, 1] or a whole number of GPUs, got 1.5"),
    ({"model": "m", "resources": {"probe_workers": 0}}, "resources.probe_workers: expected an integer >= 1, got 0"),
    ({"model": "m", "storage": "gs://b/x"}, "storage: 'gs://b/x' has an unsupported scheme; expected s3://BUCKET[/PREFIX] or file:///ABSOLUTE/PATH"),
    ({"model": "m", "storage": "s3://B_ad/x"}, "storage: bucket 'B_ad' is not a valid S3 bucket name"),
    ({"model": "m", "storage": "file://rel/x"}, "storage: 'file://rel/x' must name an absolute path"),
    ({"model": "m", "evaluation": {"tasks": []}}, "evaluation.tasks: expected a non-empty list of task names, got []"),
    ({"model": "m", "evaluation": {"limit": 0}}, "evaluation.limit: expected an integer >= 1, got 0"),
    ({"model": "m", "evaluation": {"mc_num": 0}}, "evaluation.mc_num: expected an integer >= 1, got 0"),
    ({"model": "m", "evaluation": {"check_greedy": "yes"}}, "evaluation.check_greedy: expected true or false, got 'yes'"),
    ({"model": "m", "evaluation": {"decoding": {"gen_len": 8}}},
     "evaluation.decoding: unknown field 'gen_len'; allowed: policy, steps, gen_length, block_length"),
    ({"model": "m", "colour": "red"}, "job: unknown field 'colour'; allowed: model, method, bits, name"),
    ({"method": "fp"}, "model: required field is missing"),
    (["model", "m"], "job file: expected a mapping of fields at the top level, got list"),
    ({"model": "m", "probe": [1]}, "probe: expected a mapping with fields prompts, n, steps"),
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
    bad.write_text("model: zoo:x\nprobe: {n: 3\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+, column \d+") as e:
        load_job_file(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="cannot read it"):
        load_job_file(tmp_path / "missing.yaml")


def test_sweep_expands_grid_and_collapses_irrelevant_probe_settings():
    sweep = SweepConfig.from_dict({
        "name": "s1", "base": {"storage": "file:///tmp/s", "probe": {"n": 4}},
        "grid": {"model": ["zoo:a", "zoo:b"], "method": ["rtn", "faircalib"], "bits": ["w4a4", "w3a4"],
                 "probe": [{"schedule": "early"}, {"schedule": "uniform"}, {"beta": 0.0}]}})
    # rtn ignores probe settings: 2 models x 2 bits x 1; faircalib: 2 x 2 x 3
    assert len(sweep.jobs) == 4 + 12
    fc = [j for j in sweep.jobs if j.method == "faircalib"]
    assert {(j.probe.schedule, j.probe.beta) for j in fc} == {("early", 1.0), ("uniform", 1.0), ("early", 0.0)}
    assert all(j.probe.n == 4 for j in sweep.jobs)
    assert all(j.labels["sweep"] == "s1" for j in sweep.jobs)
    assert len({j.to_json() for j in sweep.jobs}) == len(sweep.jobs)


def test_sweep_errors_name_the_job():
    with pytest.raises(ConfigError, match=r"^sweep job 1 \(method=nope\): method: 'nope' is not allowed"):
        SweepConfig.from_dict({"base": {"model": "m"}, "grid": {"method": ["fp", "nope"]}})
    with pytest.raises(ConfigError, match="sweep.grid: unknown field 'seeds'"):
        SweepConfig.from_dict({"base": {"model": "m"}, "grid": {"seeds": [1]}})


def test_unwired_stage_is_not_offered_with_a_clear_message():
    reg = StageRegistry(specs={"probe": StageSpec("probe", None, what="Stage I probing",
                                                  requires=lambda c: ("faircalib.probe:probe_shard",)),
                               "upload": StageSpec("upload", lambda ctx: StageResult())},
                        planner=lambda c: ["probe", "upload"] if c.method == "faircalib" else ["upload"])
    with pytest.raises(ConfigError) as e:
        reg.check_offered(JobConfig.from_dict({"model": "m", "method": "faircalib"}))
    msg = str(e.value)
    assert msg == ("method: 'faircalib' is not offered by this installation: stage 'probe' (Stage I probing) is "
                   "not wired yet; it waits for faircalib.probe.probe_shard; offered methods: fp, rtn, quarot, "
                   "flatquant, qdrop")


def test_every_method_is_offered_and_library_checks_run_at_submit():
    cfg = JobConfig.from_dict({"model": "m"})
    assert DEFAULT_REGISTRY.offered_methods(cfg) == ["fp", "rtn", "quarot", "flatquant", "qdrop", "faircalib"]
    DEFAULT_REGISTRY.validate(cfg)
    with pytest.raises(ConfigError, match=r"^probe: decode steps=100000 must be in 1\.\."):
        DEFAULT_REGISTRY.validate(JobConfig.from_dict({"model": "m", "probe": {"steps": 100000}}))


def test_missing_library_call_and_unknown_eval_task_rejected():
    reg = StageRegistry(specs={"evaluate": StageSpec("evaluate", lambda ctx: StageResult(),
                                                     requires=lambda c: ("faircalib.nonexistent:thing",)),
                               "upload": StageSpec("upload", lambda ctx: StageResult())},
                        planner=lambda c: ["evaluate", "upload"], eval_tasks={"fidelity": ()})
    with pytest.raises(ConfigError, match=r"stage 'evaluate' needs faircalib\.nonexistent\.thing, which this "
                                          r"installation does not have yet; offered methods: none"):
        reg.check_offered(JobConfig.from_dict({"model": "m", "method": "fp"}))
    cfg = JobConfig.from_dict({"model": "m", "method": "fp", "evaluation": {"tasks": ["fidelity", "faircalib_arith"]}})
    plain = StageRegistry(specs={"evaluate": StageSpec("evaluate", lambda ctx: StageResult())},
                          planner=lambda c: ["evaluate"], eval_tasks={"fidelity": ()})  # no lm-eval offered
    with pytest.raises(ConfigError, match=r"^evaluation\.tasks\[1\]: 'faircalib_arith' is not offered by this "
                                          r"installation \(no lm-eval integration: .*\); offered: fidelity$"):
        plain.check_offered(cfg)


def test_lm_eval_task_names_are_checked_at_submit():
    """The offline suite's names and lm-eval's registry pass; anything else is one line listing what is
    offered; a suite member next to its group is rejected; the library checks the lm-eval settings."""
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
    with pytest.raises(ConfigError, match=r"^evaluation: decode steps=0 must be in 1\.\."):
        DEFAULT_REGISTRY.validate(JobConfig.from_dict(
            {**ok, "evaluation": {"tasks": ["faircalib_arith"], "decoding": {"steps": 0}}}))
    # fidelity alone never touches lm-eval
    DEFAULT_REGISTRY.validate(JobConfig.from_dict({"model": "m", "method": "fp"}))


def test_example_job_files_and_the_quickstart_job_are_valid():
    """infra/jobs/*.yaml and the built-in quickstart job pass every submit-time check (zoo names aside)."""
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
