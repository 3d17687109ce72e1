"""The lm-eval model class (request contracts, stop sequences, rolling), the offline suite through
lm_eval.simple_evaluate, run_lm_eval / evaluate_source on FP and quantized checkpoints, and the CLI."""
from __future__ import annotations

import json

import pytest
from lm_eval.api.instance import Instance

from faircalib.errors import ConfigError
from faircalib.eval.harness import (
    evaluate_source,
    format_table,
    parse_tasks,
    run_lm_eval,
    task_manager,
)
from faircalib.eval.lm import FaircalibLM, cut_at_stop
from faircalib.eval.loading import load_for_eval
from faircalib.eval.loglik import masked_nll, rolling_pairs
from faircalib.eval.settings import LMEvalSettings
from faircalib.eval.suite import GEN_TASKS, LEAF_TASKS, TASKS_DIR
from faircalib.models import decoding_defaults

DECODE = {"gen_length": 8, "steps": 8}


def inst(kind, args, i=0):
    return Instance(request_type=kind, doc={}, arguments=args, idx=i, metadata=("t", i, 1))


@pytest.fixture(scope="module")
def lm(tiny_trained, byte_tokenizer):
    return FaircalibLM(model=tiny_trained, tokenizer=byte_tokenizer,
                       settings=LMEvalSettings(mc_num=16, decoding=DECODE))


def test_settings_validate():
    with pytest.raises(ConfigError, match="^mc_num: expected an integer >= 1, got 0$"):
        LMEvalSettings(mc_num=0)
    with pytest.raises(ConfigError, match=r"^decoding\.max_new_tokens: unknown field; allowed: policy, steps"):
        LMEvalSettings(decoding={"max_new_tokens": 4})
    with pytest.raises(ConfigError, match=r"^decoding\.steps: expected an integer in \[1, 32767\], got 0$"):
        LMEvalSettings(decoding={"gen_length": 8, "steps": 0})


def test_cut_at_stop_uses_the_earliest_stop():
    assert cut_at_stop("abc\ndef Q: x", ["Q:", "\n"]) == "abc"
    assert cut_at_stop("abc", ["zz"]) == "abc"
    assert cut_at_stop("abc", []) == "abc"


def test_generate_until_honours_stop_sequences_and_eos(lm, facts):
    prompt, answer = facts[0]  # the model writes " 46" then EOS
    raw = lm.generate_until([inst("generate_until", (prompt, {"until": []}))])[0]
    assert raw == answer  # EOS (and everything after it) cut
    outs = lm.generate_until([inst("generate_until", (prompt, {"until": ["6"]}), 0),
                              inst("generate_until", (prompt, {"until": ["4", " "]}), 1),
                              inst("generate_until", (prompt, {"until": "zz", "do_sample": False}), 2),
                              inst("generate_until", (facts[2][0], {"until": ["ar"]}), 3)])
    assert outs == [" 4", "", " 46", " e"]


def test_generate_until_gen_kwargs_override_window(lm, facts):
    # a 2-token window cannot hold " 46" + EOS in this tokenizer? it holds the 2 answer tokens exactly
    out = lm.generate_until([inst("generate_until", (facts[0][0], {"until": [], "gen_length": 2, "steps": 2}))])
    assert out == [" 46"]
    with pytest.raises(ConfigError):
        lm.generate_until([inst("generate_until", (facts[0][0], {"until": [], "gen_length": 3, "steps": 2,
                                                                 "block_length": 2}))])


def test_loglikelihood_contract(lm, tiny_trained, byte_tokenizer, facts):
    prompt, answer = facts[0]
    reqs = [inst("loglikelihood", (prompt, answer), 0), inst("loglikelihood", (prompt, " 64"), 1),
            inst("loglikelihood", (prompt + " ", answer.lstrip()), 2), inst("loglikelihood", ("", "In the"), 3)]
    res = lm.loglikelihood(reqs)
    assert [type(v) for r in res for v in r] == [float, bool] * 4
    assert res[0][1] is True and res[1][1] is False
    assert res[0][0] > res[1][0] + 1.0
    assert res[2][0] == pytest.approx(res[0][0])  # trailing context space moves to the continuation
    enc = lambda s: byte_tokenizer(s, add_special_tokens=False)["input_ids"]
    want = -masked_nll(tiny_trained, [(enc(prompt), enc(answer))], mc_num=16)[0]
    assert res[0][0] == pytest.approx(want)
    assert lm.encode_pair("", "In the")[0] == [byte_tokenizer.eos_token_id]  # empty context -> prefix token


def test_loglikelihood_rolling_sums_window_estimates(tiny_random, byte_tokenizer):
    lm = FaircalibLM(model=tiny_random, tokenizer=byte_tokenizer, max_length=12, rolling_context=4, mc_num=8)
    text = "The quick brown fox jumps over the lazy dog; 0123456789."
    ids = byte_tokenizer(text, add_special_tokens=False)["input_ids"]
    pairs = rolling_pairs(ids, byte_tokenizer.eos_token_id, 12, 4)
    assert len(pairs) >= 3
    want = -sum(masked_nll(tiny_random, pairs, mc_num=8))
    got = lm.loglikelihood_rolling([inst("loglikelihood_rolling", (text,))])
    assert got[0] == pytest.approx(want) and got[0] < 0


def test_model_args_and_errors(tiny_dir, byte_tokenizer):
    m = FaircalibLM.create_from_arg_string(f"pretrained={tiny_dir},mc_num=4,gen_length=8,steps=4,block_length=4",
                                           {"batch_size": "auto", "device": "cpu"})
    # a plain LLaDA directory (no model card): the LLaDA family's documented defaults under the model_args
    assert m.settings.mc_num == 4 and m.settings.decoding == {"policy": "low_confidence", "temperature": 0.0,
                                                              "gen_length": 8, "steps": 4, "block_length": 4}
    with pytest.raises(ConfigError, match="unknown model_args"):
        FaircalibLM.create_from_arg_string(f"pretrained={tiny_dir},mcnum=4")
    with pytest.raises(ConfigError, match="pretrained"):
        FaircalibLM()


def test_simple_evaluate_runs_the_offline_suite_end_to_end(tiny_dir):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    res = simple_evaluate(model="faircalib", model_args=f"pretrained={tiny_dir},mc_num=4,gen_length=8,steps=8",
                          tasks=["faircalib_suite"], task_manager=tm, limit=2, bootstrap_iters=0,
                          log_samples=False)
    results = res["results"]
    for t in LEAF_TASKS:
        assert t in results, t
        assert res["n-samples"][t]["effective"] == 2
    for t in GEN_TASKS:
        assert 0.0 <= results[t]["exact_match,none"] <= 1.0
    for t in ("faircalib_tasks_mc", "faircalib_kjv_cloze"):
        assert 0.0 <= results[t]["acc,none"] <= 1.0
    assert results["faircalib_kjv_ppl"]["byte_perplexity,none"] > 1.0
    assert res["groups"]["faircalib_gen"]["exact_match,none"] == pytest.approx(
        sum(results[t]["exact_match,none"] for t in GEN_TASKS) / len(GEN_TASKS))
    assert "faircalib_mc" in res["groups"] and "faircalib_suite" in res["group_subtasks"]


def test_run_lm_eval_result_has_scores_and_wall_time_per_task(tiny_trained, byte_tokenizer):
    events: list[dict] = []
    res = run_lm_eval(tiny_trained, byte_tokenizer, "faircalib_mc,faircalib_arith", limit=3, mc_num=4,
                      decoding=DECODE, bootstrap_iters=0, progress=False, report=events.append)
    assert set(res["tasks"]) == {"faircalib_tasks_mc", "faircalib_kjv_cloze", "faircalib_arith"}
    # progress events: each task starts and ends (index / total), request rows counted up to their total
    starts = [(e["task"], e["index"], e["total"]) for e in events if e.get("event") == "eval_task"]
    assert starts == [("faircalib_tasks_mc", 0, 3), ("faircalib_kjv_cloze", 1, 3), ("faircalib_arith", 2, 3)]
    ends = [e for e in events if e.get("event") == "eval_task_done"]
    assert [e["index"] for e in ends] == [0, 1, 2] and all(e["wall_s"] > 0 and e["message"] for e in ends)
    rows = [e for e in events if e.get("event") == "eval_requests"]
    last = {(e["task"], e["kind"]): e for e in rows}
    assert set(last) >= {("faircalib_tasks_mc", "loglikelihood"), ("faircalib_arith", "generate_until")}
    assert all(e["done"] == e["total"] > 0 for e in last.values())
    assert last[("faircalib_arith", "generate_until")]["total"] == 3
    for e in res["tasks"].values():
        assert e["n_samples"] == 3 and e["wall_s"] >= e["model_s"] > 0
    g = res["groups"]["faircalib_mc"]
    assert g["metrics"]["acc"] == pytest.approx(
        (res["tasks"]["faircalib_tasks_mc"]["metrics"]["acc"] + res["tasks"]["faircalib_kjv_cloze"]["metrics"]["acc"]) / 2)
    assert res["decoding"]["policy"] == "low_confidence" and res["decoding"]["gen_length"] == 8
    assert res["settings"]["mc_num"] == 4 and res["model"]["quantized"] is None
    table = format_table(res)
    assert "faircalib_arith" in table and "[faircalib_mc]" in table
    json.dumps(res)  # JSON-able


def test_task_names(tmp_path):
    assert parse_tasks(" faircalib_arith, faircalib_kv,,faircalib_arith") == ["faircalib_arith", "faircalib_kv"]
    with pytest.raises(ConfigError, match="no tasks"):
        parse_tasks(" , ")
    tm = task_manager(["faircalib_suite"])  # offline suite only: lm-eval's registry not indexed
    assert "faircalib_arith" in tm.all_tasks and "arc_easy" not in tm.all_tasks


def test_standard_task_names_pass_through_to_lm_eval(monkeypatch):
    """A name that is not ours makes the TaskManager index lm-eval's own registry too (the real index
    takes ~15-40 s to build here, so a stand-in records the arguments)."""
    import lm_eval.tasks

    seen = []

    class FakeTM:
        def __init__(self, include_path=None, include_defaults=True):
            seen.append((include_path, include_defaults))
            self.all_tasks = ["faircalib_arith", "arc_easy", "piqa"]

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", FakeTM)
    task_manager(["arc_easy", "faircalib_arith"])
    task_manager(["faircalib_suite"])
    assert seen == [(str(TASKS_DIR), True), (str(TASKS_DIR), False)]
    with pytest.raises(ConfigError, match="unknown lm-eval task"):
        task_manager(["no_such_task_xyz"])


def test_quantized_checkpoint_source(tmp_path, byte_tokenizer, tiny_dir):
    """A quantized checkpoint directory is detected, loaded with load_quantized, and evaluated; its
    decoding defaults come from the checkpoint's meta."""
    from faircalib.calibrate import quantize
    from faircalib.checkpoint import save_quantized
    from faircalib.models import load_dllm
    from faircalib.quant import QuantConfig

    model = load_dllm(tiny_dir).model
    quantize(model, QuantConfig(method="rtn", w_bits=4, a_bits=4))
    ck = save_quantized(model, tmp_path / "q", meta={"source": str(tiny_dir), "decoding": DECODE},
                        tokenizer=byte_tokenizer)
    assert decoding_defaults(str(ck)) == DECODE
    loaded = load_for_eval(ck)
    assert loaded.model.faircalib_quant["quant_config"]["method"] == "rtn"
    res = evaluate_source(str(ck), ["faircalib_arith", "faircalib_tasks_mc"], limit=2, mc_num=4, bootstrap_iters=0)
    assert res["model"]["quantized"] == {"method": "rtn", "w_bits": 4, "a_bits": 4}
    assert res["decoding"]["gen_length"] == 8 and res["tasks"]["faircalib_tasks_mc"]["n_samples"] == 2
    # the quantized model's estimates differ from FP's on the same request (it is really the W4A4 model)
    x = [([5, 6, 7], [8, 9])]
    fp = load_dllm(tiny_dir).model
    assert masked_nll(loaded.model, x, mc_num=3)[0] != pytest.approx(masked_nll(fp, x, mc_num=3)[0], rel=1e-6)


def test_cli_eval_writes_json(tiny_dir, tmp_path):
    from click.testing import CliRunner
    from faircalib.orchestrator.cli import main

    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["eval", str(tiny_dir), "--tasks", "faircalib_arith,faircalib_kjv_ppl", "--limit", "2",
                                  "--mc-num", "4", "--gen-length", "8", "--steps", "8", "--json", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "faircalib_arith" in r.output and "byte_perplexity" in r.output
    res = json.loads(out.read_text())
    assert res["tasks"]["faircalib_arith"]["wall_s"] > 0 and res["settings"]["limit"] == 2
    r = CliRunner().invoke(main, ["eval", str(tiny_dir), "--tasks", "faircalib_arith", "--mc-num", "0", "--quiet"])
    assert r.exit_code == 1 and "mc_num" in r.output
