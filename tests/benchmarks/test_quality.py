"""benchmarks/quality.py smoke run on a tiny random model: every row, metric, plot and the HTML page."""
from __future__ import annotations

import json

import torch


def test_quality_smoke(tmp_path, capsys, load_bench):
    bench = load_bench("quality")
    before = torch.get_num_threads()
    try:
        out = bench.main(["--model", "tiny:llada", "--smoke", "--methods", "fp,rtn,flatquant,faircalib",
                          "--extra-bits", "w8a8", "--ablation", "--json", str(tmp_path / "q.json"),
                          "--report", str(tmp_path / "rep")])
    finally:
        torch.set_num_threads(before)
    assert json.loads(capsys.readouterr().out)["model"] == "tiny:llada"
    assert json.loads((tmp_path / "q.json").read_text())["table"] == out["table"]
    s = out["summary"]
    labels = ["fp", "rtn", "flatquant", "faircalib", "flatquant@w8a8", "faircalib@w8a8", "abl:uniform",
              "abl:frontier_only", "abl:reliability_only", "abl:schedule_uniform", "abl:schedule_late",
              "abl:both(early)"]
    assert set(s) == set(labels)
    for lab in labels:
        for k in ("em_mean", "nll", "kl_to_fp", "mean_flips", "mean_margin", "mean_disagree_rate",
                  "never_agree_rate", "lag_mean"):
            assert k in s[lab], (lab, k)
    # FP against itself: no flips, no KL, no false commits
    assert s["fp"]["mean_flips"]["mean"] == 0 and s["fp"]["kl_to_fp"]["mean"] == 0
    assert s["fp"]["false_commit_rate"]["mean"] == 0
    assert s["rtn"]["kl_to_fp"]["mean"] > 0
    # the uniform ablation row is the flatquant run, the full-prior row the faircalib run
    assert s["abl:uniform"] == s["flatquant"] and s["abl:both(early)"] == s["faircalib"]
    # data are disjoint by construction and recorded
    st = out["settings"]
    assert st["probe"]["prompts"] == "builtin:tasks:probe" and st["calib_source"] == "builtin:mix:train"
    assert st["eval_tasks"] == "heldout split" and st["nll_source"] == "builtin:mix:heldout"
    from faircalib.data import sample_prompts, sample_tasks

    probe = set(sample_prompts("builtin:tasks:probe", st["probe_n"], 0))
    assert not probe & {t.prompt for t in sample_tasks(st["n_eval"], "heldout", seed=st["eval_seed"])}
    assert set(out["rank_consistency"]) == {"both", "frontier_only", "reliability_only", "schedule_uniform",
                                            "schedule_late"}
    assert "flatquant < faircalib" in out["orderings"]
    rep = tmp_path / "rep"
    page = (rep / "index.html").read_text()
    for png in ("stability_lag.png", "prior_curve.png", "amplification.png", "flips.png", "exact_match.png"):
        assert (rep / png).stat().st_size > 1000 and f'src="{png}"' in page
    assert "abl:schedule_late" in page
