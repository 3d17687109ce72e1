"""benchmarks/scale.py: the per-stage subprocess plumbing at a tiny width, and the summary arithmetic (slope
between depths, extrapolation to the real depth, checkpoint ratio) on hand-made numbers."""
from __future__ import annotations


import pytest


def test_tiny_stages_run_in_fresh_processes(tmp_path, capsys, load_bench):
    scale = load_bench("scale")
    out = scale.main(["--tiny", "--like", "dream-7b", "--layers", "1", "--stages", "flatquant,load_quantized",
                      "--work", str(tmp_path), "--threads", "1"])
    capsys.readouterr()
    s = out["shapes"]["dream-7b"]
    per = s["stages"]["flatquant"]["per_depth"][1]
    assert "error" not in per and per["peak_rss_gb"] > 0 and per["peak_over_loaded_gb"] is not None
    raw = out["raw"]["dream-7b/1"]["stages"]
    assert raw["flatquant"]["head_and_embedding"] == "head w8a16, embedding w8" and raw["flatquant"]["blocks"]
    assert raw["flatquant"]["rss_after_load"] >= raw["flatquant"]["model_bytes"]  # weights touched = resident
    lq = raw["load_quantized"]
    assert lq["logits_finite"] and 0 < lq["resident_bytes"] and lq["checkpoint_bytes"] < lq["fp_model_bytes_on_disk"]
    assert s["checkpoint"]["formula_full_depth"]["ratio"] >= 3.2
    # a second call reuses the finished stages (WORK/partial.json) instead of rerunning them
    again = scale.main(["--tiny", "--like", "dream-7b", "--layers", "1", "--stages", "flatquant", "--work",
                        str(tmp_path)])
    capsys.readouterr()
    assert again["raw"]["dream-7b/1"]["stages"]["flatquant"] == raw["flatquant"]


def test_summary_slope_and_extrapolation(load_bench):
    scale = load_bench("scale")
    gb = 2 ** 30
    runs = {2: {"flatquant": {"stage_s": 100.0, "wall_s": 110.0, "peak_rss": 6 * gb, "peak_over_loaded": 2 * gb},
                "load_quantized": {"checkpoint_bytes": 1000, "fp_model_bytes_on_disk": 3000, "resident_bytes": 900,
                                   "rss_after_load": gb}},
            4: {"flatquant": {"stage_s": 160.0, "wall_s": 170.0, "peak_rss": 7 * gb, "peak_over_loaded": 2.1 * gb},
                "load_quantized": {"checkpoint_bytes": 1200, "fp_model_bytes_on_disk": 3800, "resident_bytes": 1000,
                                   "rss_after_load": gb}}}
    s = scale.summarize("llada-8b", runs, {})
    fq = s["stages"]["flatquant"]
    assert fq["stage_s_per_layer"] == 30.0 and fq["stage_s_at_32_layers"] == 100.0 + 30.0 * 30
    assert fq["peak_rss_per_layer"] == 0.5 and fq["peak_rss_at_32_layers"] == 21.0
    assert fq["peak_over_loaded_growth_2_to_4"] == pytest.approx(0.05)
    ck = s["checkpoint"]
    assert ck["checkpoint_bytes_at_32_layers"] == 1000 + 100 * 30 and ck["fp_bf16_bytes_at_32_layers"] == 3000 + 400 * 30
    assert ck["ratio_at_32_layers"] == round(15000 / 4000, 3)
    assert s["paper_comparison"]["host_peak_rss_gb_extrapolated"] == 21.0


def test_wall_extrapolation_is_omitted_when_the_depths_saw_different_load(load_bench):
    """A 2-layer run at load 8 and a 4-layer run at load 3 give a negative wall 'slope': it is not reported
    (with the reason), while the load-independent cpu_s slope is."""
    scale = load_bench("scale")
    gb = 2 ** 30
    runs = {2: {"flatquant": {"stage_s": 450.0, "wall_s": 458.0, "cpu_s": 250.0, "peak_rss": 6 * gb,
                              "load1_before": 7.0, "load1_after": 9.0}},
            4: {"flatquant": {"stage_s": 340.0, "wall_s": 345.0, "cpu_s": 440.0, "peak_rss": 7 * gb,
                              "load1_before": 3.0, "load1_after": 3.0}}}
    fq = scale.summarize("llada-8b", runs, {})["stages"]["flatquant"]
    assert "wall_s_per_layer" not in fq and "stage_s_at_32_layers" not in fq
    assert "different machine load" in fq["wall_extrapolation"]
    assert fq["cpu_s_per_layer"] == 95.0 and fq["cpu_s_at_32_layers"] == 250.0 + 95.0 * 30
    runs[2]["flatquant"].update(load1_before=3.2, load1_after=2.8)
    fq = scale.summarize("llada-8b", runs, {})["stages"]["flatquant"]
    assert fq["wall_s_per_layer"] == pytest.approx(-56.5) and "wall_extrapolation" not in fq
