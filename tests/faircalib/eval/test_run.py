"""evaluate_models with a cached FP baseline, and the FP baseline key: exactly the settings a task's FP
result depends on."""
from __future__ import annotations

import pytest

from faircalib.eval.run import evaluate_models
from faircalib.eval.settings import EvalConfig, fp_baseline_key


def test_fp_baseline_key_covers_exactly_what_the_fp_result_depends_on():
    base = EvalConfig(tasks=("fidelity", "faircalib_arith"), limit=10, mc_num=8)
    dec = {"steps": 16, "gen_length": 16}
    lm = fp_baseline_key(base, "faircalib_arith", "h1", dec)
    fid = fp_baseline_key(base, "fidelity", "h1", dec)
    assert lm != fid and lm == fp_baseline_key(base, "faircalib_arith", "h1", dict(dec))
    assert fp_baseline_key(base, "faircalib_arith", "h2", dec) != lm                       # other weights
    assert fp_baseline_key(base, "faircalib_tasks_mc", "h1", dec) != lm                    # other task
    for change in ({"limit": 20}, {"mc_num": 16}, {"check_greedy": False}, {"decoding": {"steps": 8}}):
        assert fp_baseline_key(base.replace(**change), "faircalib_arith", "h1", dec) != lm, change
    assert fp_baseline_key(base, "faircalib_arith", "h1", {**dec, "steps": 8}) != lm      # model defaults
    assert fp_baseline_key(base.replace(n=4, seq_len=64), "faircalib_arith", "h1", dec) == lm  # fidelity data
    assert fp_baseline_key(base.replace(mc_num=16, limit=3), "fidelity", "h1", dec) == fid     # lm-eval knobs
    assert fp_baseline_key(base.replace(n=4), "fidelity", "h1", dec) != fid
    assert fp_baseline_key(base.replace(tasks=("fidelity",)), "fidelity", "h1", dec) == fid    # the task list


@pytest.fixture(scope="module")
def other_model(byte_tokenizer):
    from faircalib.models import tiny_model

    tok = byte_tokenizer
    return tiny_model("llada", 1, vocab_size=len(tok), mask_token_id=tok.mask_token_id, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)


def test_a_cached_fp_result_is_used_and_the_quantized_side_is_unchanged(tiny_random, other_model, byte_tokenizer,
                                                                          one_thread):
    cfg = EvalConfig(tasks=("fidelity",), n=2, seq_len=16)
    fresh = evaluate_models(tiny_random, byte_tokenizer, cfg, quantized=other_model)
    cached = evaluate_models(tiny_random, byte_tokenizer, cfg, quantized=other_model,
                             fp_results={"fidelity": fresh["fidelity"]["fp"]})
    assert cached["fidelity"]["fp"] == fresh["fidelity"]["fp"]
    q1, q2 = dict(fresh["fidelity"]["quantized"]), dict(cached["fidelity"]["quantized"])
    q1.pop("wall_s"), q2.pop("wall_s")
    assert q1 == q2 and q1["kl_to_ref"] > 0  # the FP model is still the quantized model's reference
    marker = {"nll": 123.0, "wall_s": 0.0}
    assert evaluate_models(tiny_random, byte_tokenizer, cfg, fp_results={"fidelity": marker})["fidelity"]["fp"] == marker
