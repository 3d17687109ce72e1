"""benchmarks/fidelity.py on a tiny random model (smoke profile): every pre-registered row, the JSON schema
the issue asks for, the report, and resumption (a rerun recomputes only the missing rows, identically)."""
from __future__ import annotations

import json

import pytest
import torch


@pytest.mark.timeout(1500)
def test_fidelity_smoke_schema_report_and_resume(tmp_path, capsys, load_bench):
    bench = load_bench("fidelity")
    js, work, rep = tmp_path / "f.json", tmp_path / "work", tmp_path / "rep"
    args = ["--model", "tiny:llada", "--profile", "smoke", "--json", str(js), "--work", str(work), "--bits", "w4a4"]
    bench.main(args + ["--workers", "2", "--report", str(rep)])
    result = json.loads(js.read_text())
    prof = bench.PROFILES["smoke"]
    assert sorted(result["rows"]) == sorted(bench.plan(prof))
    assert result["settings"]["model"] == "tiny:llada" and result["settings"]["bits"] == "w4a4"
    for name in ("fp", "rtn", "quarot", "flatquant", "faircalib", *bench.ABLATION_ROWS):
        em = result["methods"][name]["em"]
        assert set(em) == {"mean", "std", "n_seeds"} and 0.0 <= em["mean"] <= 1.0
    assert result["methods"]["faircalib"]["em"]["n_seeds"] == prof["main_seeds"]
    pair = result["paired"]["faircalib_vs_flatquant"]
    for metric in ("em", "flips", "never_agree", "kl"):
        assert pair[metric]["ci_low"] <= pair[metric]["delta"] <= pair[metric]["ci_high"]
        assert pair[metric]["verdict"] in ("holds", "reversed", "not resolved")
    fp_row = result["rows"]["fp@0"]
    assert sum(fp_row["flips"]) == 0 and max(fp_row["kl"]) < 1e-6  # FP against itself
    row = result["rows"]["faircalib@0"]
    assert row["bf16_kernel"] == "float32"  # the smoke profile evaluates in float32
    L = result["settings"]["window"]
    assert len(row["flip_by_pos"]) == L and len(row["prior_curve"]) == L
    assert len(row["em"]) == prof["n_eval"] and len(row["flips"]) == prof["n_diag"]
    assert abs(sum(row["prior_curve"]) / L - 1.0) < 1e-6
    html = (rep / "index.html").read_text()
    assert "Verdict" in html and "Glossary" in html and "faircalib vs flatquant" in html
    kernel_row = html.split("<tr><td>float32</td><td>")[1].split("</td>")[0]  # the evaluation kernel per row
    assert sorted(kernel_row.split(", ")) == sorted(result["rows"])
    assert {p.name for p in rep.glob("*.png")} >= {"delta_vs_fp.png", "flip_by_pos.png", "kl_by_pos.png"}

    # resume: drop two finished rows; a rerun computes exactly those, bit-identically, and keeps the rest
    dropped = {k: result["rows"].pop(k) for k in ("faircalib@1", "masked_faircalib@0")}
    js.write_text(json.dumps(result))
    bench.main(args + ["--workers", "1"])
    again = json.loads(js.read_text())
    assert sorted(again["rows"]) == sorted(bench.plan(prof))
    for k, r in dropped.items():
        assert again["rows"][k]["em"] == r["em"] and again["rows"][k]["flips"] == r["flips"]
        assert again["rows"][k]["kl"] == r["kl"]
    assert again["rows"]["flatquant@0"] == result["rows"]["flatquant@0"]
    capsys.readouterr()


def test_verdict_paragraph_and_formatting(load_bench):
    rep = load_bench("fidelity_report")
    rows = {"fp@0": {}, "rtn@0": {"bf16_kernel": "emulated"}, "quarot@0": {"bf16_kernel": "emulated"}}
    assert rep.kernels_of({"rows": rows}) == {"native bf16 GEMM (not recorded)": ["fp@0"],
                                              "emulated": ["rtn@0", "quarot@0"]}
    assert rep.fmt(0.0004, "kl") == "4.00e-04" and rep.fmt(0.25, "em") == "25.0%" and rep.fmt(0.0) == "0"
    result = {"settings": {"model": "m", "bits": "w4a3"}, "paired": {
        "faircalib_vs_flatquant": {m: {"delta": 0.01, "ci_low": -0.02, "ci_high": 0.04, "n_seeds": 5,
                                       "n_examples": 1000, "verdict": "not resolved"} for m in ("em", "flips", "never_agree", "kl")}}}
    text = rep.verdict_paragraph(result)
    assert "not distinguishable" in text and "5 seeds x 1000" in text
    assert "its own ablations" not in text  # no ablation pair yet: no sentence


def test_ablation_sentence_reads_each_pair_from_its_side(load_bench):
    """faircalib_vs_X 'holds' = FAIR-Calib better than X; X_vs_faircalib 'holds' = X better, i.e. FAIR-Calib
    worse; baselines (flatquant, rtn, quarot) are not ablations."""
    rep = load_bench("fidelity_report")

    def pair(verdict):
        return {"em": {"delta": 0.0, "ci_low": 0.0, "ci_high": 0.0, "verdict": verdict}}

    paired = {"faircalib_vs_flatquant": pair("holds"), "faircalib_vs_rtn": pair("holds"),
              "faircalib_vs_window_uniform": pair("holds"), "faircalib_vs_schedule_late": pair("reversed"),
              "faircalib_vs_frontier_only": pair("not resolved"),
              "masked_faircalib_vs_faircalib": pair("reversed"), "schedule_uniform_vs_flatquant": pair("holds")}
    text = rep.ablation_sentence(paired)
    assert text == ("FAIR-Calib against its own ablations in EM: better than window_uniform, masked_faircalib; "
                    "worse than schedule_late; not resolved against frontier_only. ")


def test_pairs_use_only_the_common_seeds_while_a_run_is_partial(load_bench):
    """A partial run (flatquant seeds 0 and 1, faircalib seed 0 only) pairs faircalib with flatquant on seed 0
    alone; the deterministic fp / rtn rows pair with every seed of the other side."""
    bench = load_bench("fidelity")

    def row(name, seed, em):
        n = 40
        return {"name": name, "seed": seed, "em": [em] * n, "never_agree": [0.1] * n, "flips": [1.0] * n,
                "kl": [0.01] * n, "flip_by_pos": [0.0] * 4, "kl_by_pos": [0.0] * 4, "em_per_family": {"x": em}}

    rows = [row("flatquant", 0, 0), row("flatquant", 1, 1), row("faircalib", 0, 1), row("rtn", 0, 0)]
    result = {"rows": {f"{r['name']}@{r['seed']}": r for r in rows}}
    bench.summarize(result, n_boot=200)
    p = result["paired"]
    assert p["faircalib_vs_flatquant"]["em"]["n_seeds"] == 1
    assert p["faircalib_vs_flatquant"]["em"]["delta"] == 1.0  # seed 0: 1 - 0 (seed 1's flatquant is not paired)
    assert p["flatquant_vs_rtn"]["em"]["n_seeds"] == 2 and p["flatquant_vs_rtn"]["em"]["delta"] == 0.5
    rows.append(row("quarot", 5, 0))  # no seed in common with flatquant: no pair at all
    result = {"rows": {f"{r['name']}@{r['seed']}": r for r in rows}}
    bench.summarize(result, n_boot=200)
    assert "flatquant_vs_quarot" not in result["paired"]


def test_position_analysis_parts_and_rank_correlation(load_bench):
    """The per-position analysis on curves with known answers: window thirds, the prior's range, and
    Spearman's rho (+1 for a flip curve that rises with the prior, -1 for one that falls, None if flat)."""
    rep = load_bench("fidelity_report")
    assert rep.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rep.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rep.spearman([1, 2, 3, 4], [5, 5, 5, 5]) is None
    assert rep._ranks([3.0, 1.0, 3.0, 2.0]) == [2.5, 0.0, 2.5, 1.0]
    L = 6
    prior = [0.5, 0.5, 1.0, 1.0, 1.5, 1.5]
    rising, falling = [0.0, 0.0, 0.1, 0.1, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1, 0.0, 0.0]
    result = {"rows": {"faircalib@0": {"name": "faircalib", "prior_curve": prior}},
              "methods": {"flatquant": {"flip_by_pos": falling, "kl_by_pos": [0.0] * L},
                          "faircalib": {"flip_by_pos": rising, "kl_by_pos": [1.0] * L}}}
    pa = rep.position_analysis(result)
    assert pa["parts"] == {"early": [0, 1], "middle": [2, 3], "late": [4, 5]}
    assert pa["prior"]["min"] == 0.5 and pa["prior"]["max"] == 1.5
    assert pa["prior"]["by_part"] == {"early": 0.5, "middle": 1.0, "late": 1.5}
    assert pa["methods"]["flatquant"]["flip_by_part"]["early"] == pytest.approx(0.2)
    assert pa["methods"]["flatquant"]["spearman_prior_vs_flip"] == pytest.approx(-1.0)
    assert pa["methods"]["faircalib"]["spearman_prior_vs_flip"] == pytest.approx(1.0)
    assert pa["methods"]["faircalib"]["kl_by_part"]["late"] == 1.0
    assert rep.position_analysis({"rows": {}, "methods": {}}) is None
    assert "Spearman" in rep._position_table(pa) and "No FAIR-Calib rows" in rep._position_table(None)
    sentence = rep.position_sentence(pa)  # the verdict paragraph's descriptive line
    assert "0.2 / 0.1 / 0" in sentence and "0.5 / 1 / 1.5" in sentence and "max/min 3.00" in sentence
    assert "ρ(prior, FlatQuant flip rate) = -1.00" in sentence and "less weight where FlatQuant errs more" in sentence
    assert rep.position_sentence(None) == ""


def test_the_bf16_profile_runs_emulated_bf16_gemms_on_a_cpu_without_bf16_units(monkeypatch, load_bench, tmp_path):
    fidelity = load_bench("fidelity")
    from faircalib.bf16 import KERNEL_EMULATED, KERNEL_NATIVE, Bf16GemmEmulation

    monkeypatch.setattr(fidelity, "emulate_bf16_here", lambda: True)  # an AVX2-only CPU
    ctx = fidelity.Context("tiny:llada", fidelity.PROFILES["default"], tmp_path)
    assert ctx.emulate and ctx.kernel == KERNEL_EMULATED
    ids = torch.tensor([ctx.prompts(ctx.eval_tasks[:1])[0].tolist()])  # (1, T)
    with torch.no_grad(), ctx.amp() as mode:
        logits = ctx.model(ids)  # (1, T, V)
    assert isinstance(mode, Bf16GemmEmulation) and mode.calls > 0 and torch.isfinite(logits).all()
    monkeypatch.setattr(fidelity, "emulate_bf16_here", lambda: False)  # a CPU with bf16 units
    native = fidelity.Context("tiny:llada", fidelity.PROFILES["default"], tmp_path)
    assert not native.emulate and native.kernel == KERNEL_NATIVE
    with native.amp() as mode:
        assert mode is None and torch.is_autocast_cpu_enabled()
    smoke = fidelity.Context("tiny:llada", fidelity.PROFILES["smoke"], tmp_path)  # float32 evaluation
    assert not smoke.emulate and smoke.kernel == "float32"
    with smoke.amp():
        assert not torch.is_autocast_cpu_enabled()



def test_the_teacher_cache_skips_the_decode_only_for_an_identical_fingerprint(tmp_path, load_bench):
    bench = load_bench("fidelity")
    prof = {**bench.PROFILES["smoke"], "n_eval": 4}
    cache = tmp_path / "cache" / "teacher.traj"
    first = bench.Context("tiny:llada", prof, tmp_path / "w1")
    first.cache_path = cache
    decoded = first.teacher(records=True)
    assert cache.exists() and "top1" in decoded.records
    stored = json.loads((tmp_path / "cache" / "teacher.traj.json").read_text())["fingerprint"]
    assert stored["n_eval"] == 4 and len(stored["weights_sha256"]) == 64 and stored["kernel"] == "float32"

    calls = []
    second = bench.Context("tiny:llada", prof, tmp_path / "w2")  # a fresh machine: empty work directory
    second.cache_path = cache
    real_decode = second.decode
    second.decode = lambda *a, **k: calls.append(1) or real_decode(*a, **k)
    hit = second.teacher()
    assert calls == [] and hit.records == {}  # no decode: the record-free persistent copy
    assert torch.equal(hit.tokens, decoded.tokens) and torch.equal(hit.commit_step, decoded.commit_step)
    assert torch.equal(hit.prompt_ids, decoded.prompt_ids)
    assert (tmp_path / "w2" / "teacher.traj").exists()
    full = second.teacher(records=True)  # the fp row needs the per-step top-1: only a decode has it
    assert calls == [1] and torch.equal(full.records["top1"], decoded.records["top1"])

    other = bench.Context("tiny:llada", prof, tmp_path / "w3")
    other.cache_path, other.kernel = cache, "some other bf16 kernel"  # e.g. a host with native bf16 units
    other.decode = lambda *a, **k: calls.append(2) or real_decode(*a, **k)
    other.teacher()
    assert calls == [1, 2]  # a different fingerprint decodes afresh ...
    assert json.loads((tmp_path / "cache" / "teacher.traj.json").read_text())["fingerprint"]["kernel"] == \
        "some other bf16 kernel"  # ... and the copy now matches this machine
    from faircalib.bf16 import KERNEL_EMULATED, KERNEL_NATIVE

    path = bench.teacher_cache_path
    assert path("auto", "tiny:llada", "tiny_llada", tmp_path, KERNEL_NATIVE) is None
    # one copy per kernel: the two kinds of host no longer overwrite each other's teacher and priors
    assert path("auto", "zoo:long-dream", "long-dream", tmp_path, KERNEL_NATIVE) == \
        tmp_path / "fidelity_long-dream_teacher_bf16.traj"
    assert path("auto", "zoo:long-dream", "long-dream", tmp_path, KERNEL_EMULATED) == \
        tmp_path / "fidelity_long-dream_teacher_bf16emu.traj"
    assert path("auto", "zoo:long-dream", "long-dream", tmp_path, "float32") == \
        tmp_path / "fidelity_long-dream_teacher_fp32.traj"
    assert path("none", "zoo:long-dream", "long-dream", tmp_path, KERNEL_NATIVE) is None
    assert path(str(tmp_path / "mine.traj"), "zoo:long-dream", "long-dream", tmp_path, KERNEL_NATIVE) == \
        tmp_path / "mine.traj"  # an explicit path is used whatever the kernel
    with pytest.raises(ValueError, match="unknown bf16 kernel label 'some other bf16 kernel'"):
        path("auto", "zoo:long-dream", "long-dream", tmp_path, "some other bf16 kernel")
    assert bench.priors_cache_dir(tmp_path / "fidelity_long-dream_teacher_bf16emu.traj") == \
        tmp_path / "fidelity_long-dream_priors_bf16emu"


def test_a_rerun_without_json_finds_the_result_and_not_the_teacher_fingerprint(tmp_path, load_bench):
    """Regression: the teacher cache's fingerprint, fidelity_<stem>_teacher.traj.json, sorts before
    fidelity_<stem>_w4a4.json and matched the resume glob; reading its "settings" crashed every rerun."""
    fid = load_bench("fidelity")
    (tmp_path / "fidelity_m_teacher.traj.json").write_text(json.dumps({"weights_sha256": "ab", "n_eval": 4}))
    assert fid.find_result(tmp_path, "m", "default") is None
    (tmp_path / "fidelity_m_w4a3.json").write_text(json.dumps({"settings": {"profile": "smoke"}, "rows": {}}))
    (tmp_path / "fidelity_m_w4a4.json").write_text(json.dumps({"settings": {"profile": "default"}, "rows": {}}))
    assert fid.find_result(tmp_path, "m", "default") == tmp_path / "fidelity_m_w4a4.json"
    assert fid.find_result(tmp_path, "m", "smoke") == tmp_path / "fidelity_m_w4a3.json"
    assert fid.find_result(tmp_path, "other", "default") is None


def test_the_prior_cache_skips_the_probe_only_for_an_identical_fingerprint(tmp_path, load_bench, monkeypatch):
    bench = load_bench("fidelity")
    prof = bench.PROFILES["smoke"]
    cache = tmp_path / "res" / "fidelity_m_teacher.traj"
    assert bench.priors_cache_dir(cache) == tmp_path / "res" / "fidelity_m_priors"
    assert bench.priors_cache_dir(tmp_path / "t.traj") == tmp_path / "t.traj.priors"
    probes = []
    real = bench.probe_priors
    monkeypatch.setattr(bench, "probe_priors", lambda *a, **k: probes.append(a[3].seed) or real(*a, **k))
    first = bench.Context("tiny:llada", prof, tmp_path / "w1")
    first.cache_path = cache
    made = first.priors(1)
    assert probes == [1] and (tmp_path / "res" / "fidelity_m_priors" / "s1" / "fingerprint.json").exists()

    second = bench.Context("tiny:llada", prof, tmp_path / "w2")  # a fresh machine: empty work directory
    second.cache_path = cache
    hit = second.priors(1)
    assert probes == [1]  # no probe: the persistent copy, equal to the probe's priors
    assert set(hit) == set(bench.PRIOR_VARIANTS)
    for name in bench.PRIOR_VARIANTS:
        assert torch.equal(hit[name].per_sample, made[name].per_sample)
        assert torch.equal(hit[name].curve, made[name].curve)
        assert hit[name].cache_key() == made[name].cache_key()
    second.priors(0)
    assert probes == [1, 0]  # another seed is another fingerprint

    other = bench.Context("tiny:llada", prof, tmp_path / "w3")
    other.cache_path, other.kernel = cache, "some other bf16 kernel"
    other.priors(1)
    assert probes == [1, 0, 1]  # a different fingerprint probes afresh and replaces the copy
    meta = json.loads((tmp_path / "res" / "fidelity_m_priors" / "s1" / "fingerprint.json").read_text())
    assert meta["fingerprint"]["kernel"] == "some other bf16 kernel" and meta["fingerprint"]["probe"]["seed"] == 1


def test_paired_deltas_show_float_noise_bounds_as_zero(load_bench):
    """A bootstrap bound that is a difference of equal means is float noise (-4.08e-21 was shown in the
    long-dream report); it reads as 0, while a real small bound keeps its digits."""
    rep = load_bench("fidelity_report")
    assert rep.fmt_delta({"delta": 8.91e-4, "ci_low": -4.08e-21, "ci_high": 1.85e-3}, "never_agree") == \
        "+0.000891 [+0, +0.00185]"
    assert rep.fmt_delta({"delta": 9.57e-4, "ci_low": 6.52e-5, "ci_high": 1.89e-3}, "never_agree") == \
        "+0.000957 [+6.52e-05, +0.00189]"
    assert rep.fmt_delta({"delta": 0.0638, "ci_low": 0.0158, "ci_high": 0.1078}, "em") == "+6.4 pts [+1.6, +10.8]"


def _timed(name: str, seed: int, seconds: float, kernel: str = "native bf16 GEMM") -> dict:
    return {"name": name, "seed": seed, "row_time_s": seconds, "bf16_kernel": kernel}


def test_row_cost_is_the_median_calibrated_row_of_this_kernel(load_bench):
    fid = load_bench("fidelity")
    rows = {"fp@0": _timed("fp", 0, 5.0), "quarot@0": _timed("quarot", 0, 9000.0),  # neither is counted
            "flatquant@0": _timed("flatquant", 0, 100.0), "faircalib@0": _timed("faircalib", 0, 300.0),
            "window_uniform@0": _timed("window_uniform", 0, 200.0),
            "faircalib@1": _timed("faircalib", 1, 4000.0, kernel="emulated")}
    assert fid.row_cost_s(rows, "native bf16 GEMM") == 200.0  # median of 100, 200, 300
    assert fid.row_cost_s(rows, "emulated") == 4000.0
    assert fid.row_cost_s(rows, "float32") == 250.0  # no row of that kernel: every calibrated row (even count)
    assert fid.row_cost_s({"fp@0": rows["fp@0"]}) is None


def test_the_budget_never_cuts_the_main_pair_and_cuts_ablation_seeds_whole(load_bench):
    fid = load_bench("fidelity")
    n_abl = len(fid.ABLATION_ROWS)
    rows = {f"{m}@{s}": _timed(m, s, 100.0) for s in range(2) for m in fid.MAIN_ROWS}
    # the main pair and the baselines run even with the deadline long past
    for key in ("faircalib@4", "flatquant@3", "quarot@0", "rtn@0"):
        assert fid.budget_cut(key, rows, set(), 2, deadline=0.0, now=1e6) is None
    # an unstarted ablation seed needs n_abl rows x 100 s over 2 workers
    need = n_abl * 100.0 / 2
    assert fid.budget_cut("window_uniform@1", rows, set(), 2, deadline=need, now=0.0) is None
    cut = fid.budget_cut("window_uniform@1", rows, set(), 2, deadline=need - 1.0, now=0.0)
    assert cut.startswith("ablation seed 1 and later cut") and f"{n_abl} rows" in cut
    # a seed already started (one row finished or claimed) is finished, whatever the clock says
    assert fid.budget_cut("prior_floor1@1", rows, {"window_uniform@1"}, 2, deadline=0.0, now=1e6) is None
    started = {**rows, "window_uniform@1": _timed("window_uniform", 1, 100.0)}
    assert fid.budget_cut("prior_floor1@1", started, set(), 2, deadline=0.0, now=1e6) is None
    # nothing calibrated yet: no estimate, no cut
    assert fid.budget_cut("window_uniform@0", {}, set(), 2, deadline=0.0, now=1e6) is None


def test_the_plan_estimate_adds_rows_at_their_cost_over_the_workers(load_bench):
    fid = load_bench("fidelity")
    prof = fid.PROFILES["smoke"]  # 2 main seeds x 2, fp/rtn/quarot, 8 ablations x 1 seed: 15 rows
    keys = fid.plan(prof)
    rows = {"fp@0": _timed("fp", 0, 10.0), "rtn@0": _timed("rtn", 0, 20.0),
            "flatquant@0": _timed("flatquant", 0, 100.0), "faircalib@0": _timed("faircalib", 0, 100.0)}
    est = fid.estimate_plan(prof, rows, workers=2, kernel="native bf16 GEMM")
    assert est["rows_done"] == 4 and est["rows_left"] == len(keys) - 4 == 11 and est["row_cost_s"] == 100.0
    assert est["hours_full_plan"] == round((13 * 100.0 + 10.0 + 20.0) / 2 / 3600, 2)
    assert est["hours_left"] == round(11 * 100.0 / 2 / 3600, 2)
    assert est["hours_without_ablations"] == round((5 * 100.0 + 30.0) / 2 / 3600, 2)
    other = fid.estimate_plan(prof, rows, workers=2, kernel="emulated")  # fp/rtn of another kernel: at cost
    assert other["hours_full_plan"] == round(15 * 100.0 / 2 / 3600, 2)
    assert fid.estimate_plan(prof, {}, workers=2)["row_cost_s"] is None


@pytest.mark.timeout(900)
def test_a_budget_run_keeps_the_main_rows_cuts_the_ablations_and_a_rerun_completes(tmp_path, load_bench, capsys):
    bench = load_bench("fidelity")
    js, work = tmp_path / "f.json", tmp_path / "work"
    args = ["--model", "tiny:llada", "--profile", "smoke", "--json", str(js), "--work", str(work), "--bits", "w4a4",
            "--workers", "1"]
    with pytest.raises(SystemExit):
        bench.main(args + ["--budget-hours", "0"])
    assert "--budget-hours 0.0: give a positive number of hours" in capsys.readouterr().err
    bench.main(args + ["--budget-hours", "0.0001"])  # 0.36 s: no ablation seed fits
    result = json.loads(js.read_text())
    prof = bench.PROFILES["smoke"]
    kept = [k for k in bench.plan(prof) if k.split("@")[0] not in bench.ABLATION_ROWS]
    assert sorted(result["rows"]) == sorted(kept)  # the main pair (2 seeds) and fp, rtn, quarot
    budget = result["settings"]["budget"]
    assert budget["hours"] == 0.0001 and budget["cut_at"] == f"{bench.ABLATION_ROWS[0]}@0"
    assert budget["reason"].startswith("ablation seed 0 and later cut by the time budget")
    assert result["paired"]["faircalib_vs_flatquant"]["em"]["n_seeds"] == prof["main_seeds"]
    bench.main(args)  # no budget: the rerun runs the cut rows and drops the old budget record
    again = json.loads(js.read_text())
    assert sorted(again["rows"]) == sorted(bench.plan(prof)) and "budget" not in again["settings"]
    assert again["rows"]["faircalib@0"] == result["rows"]["faircalib@0"]
    est = bench.main(["--model", "tiny:llada", "--profile", "smoke", "--json", str(js), "--estimate"])
    assert all(e["rows_left"] == 0 and e["row_cost_s"] > 0 for e in est["by_kernel"].values())
    assert est["this_cpu_kernel"] in est["by_kernel"]
    capsys.readouterr()
