"""bf16-autocast vs float32 evaluation on CPU: exact match and decoded-token agreement of FP and RTN models
(zoo:tiny-llada, 200 held-out short-task examples). Justifies benchmarks/fidelity.py evaluating under bf16
autocast (2-2.5x faster on this AVX512-BF16 CPU).

    python benchmarks/eval_dtype.py > benchmarks/results/eval_dtype.json
"""
import torch, json
from faircalib.models import load_dllm, decoding_defaults
from faircalib.data import sample_tasks, exact_match
from faircalib.diffusion import DecodeConfig, generate, decode_text, resolve_config
from faircalib.pipeline import MethodConfig, run_method
torch.set_num_threads(1); torch.set_flush_denormal(True)
l = load_dllm("zoo:tiny-llada"); m, tok = l.model.eval(), l.tokenizer
tasks = sample_tasks(200, "heldout", 5)
prompts = [torch.tensor(tok(t.prompt, add_special_tokens=False)["input_ids"]) for t in tasks]
dcfg = resolve_config(m, DecodeConfig.from_dict(decoding_defaults("zoo:tiny-llada")))
out = {}
for name, model in [("fp", m), ("rtn_w4a4", run_method(m, tok, MethodConfig(method="rtn", bits="w4a4"))[0]), ("rtn_w4a3", run_method(m, tok, MethodConfig(method="rtn", bits="w4a3"))[0])]:
    res = {}
    for mode in ("fp32", "bf16"):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            toks = torch.cat([generate(model, prompts[i:i+50], config=dcfg).tokens for i in range(0, 200, 50)])
        res[mode] = toks
        em = sum(exact_match(p, t.answer) for p, t in zip(decode_text(tok, toks), tasks)) / len(tasks)
        out[f"{name}_{mode}_em"] = em
    out[f"{name}_token_agree"] = float((res["fp32"] == res["bf16"]).float().mean())
    out[f"{name}_seq_agree"] = float((res["fp32"] == res["bf16"]).all(1).float().mean())
out["command"] = "python benchmarks/eval_dtype.py"
print(json.dumps(out, indent=1))
