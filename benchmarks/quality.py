"""FAIR-Calib quality report (issue 5): every method in ONE run on the same held-out data.

    python benchmarks/quality.py --model zoo:tiny-dream --bits w4a4 \
        --methods fp,rtn,quarot,flatquant,faircalib [--extra-bits w3a4,w8a8] [--ablation] [--seeds 0,1] \
        --json out.json --report out_dir/
    python benchmarks/quality.py --model tiny:llada --smoke --json /tmp/q.json --report /tmp/q   # seconds

Per (method row, seed): exact match per task family (held-out procedural tasks, the model's default
decoding policy), held-out masked-token NLL and KL / top-1 agreement to FP (`builtin:mix:heldout`),
teacher-forced commit-step flips per sequence and frontier logit margin (on the FP teacher's own
default-policy trajectories of the same prompts), post-commit mean_disagree / never_agree and the
stability-lag distribution (each model's own trajectory), and the error-amplification trace aligned at
the first false commit (quantized rollout vs the FP teacher on the same states).
--extra-bits adds FlatQuant vs FAIR-Calib rows at other bit widths. --ablation adds the paper's rows:
frontier-only (beta 0), reliability-only (schedule none), uniform / late / early schedules (uniform
weights = the flatquant row, both = early = the faircalib row, computed once).

Data (disjoint by construction): Stage I probes `builtin:tasks:probe` prompts; Stage II calibrates on
`builtin:mix:train` text; evaluation uses the `heldout` task split and `builtin:mix:heldout` text. A
second probe corpus (KJV train text snippets) gives the cross-corpus rank consistency of the prior.
Defaults come from docs/method.md, scaled down for the CPU where noted in `settings` (all recorded in the JSON):
T and L = the model's default decoding steps / gen_length, 512 probe prompts (docs/method.md §6), 500 held-out task
examples (100 per family), 64 x 64 calibration tokens (the zoo models' training text length), 15 epochs. Seeds vary the probe commit sets, the
calibration sample and the quantizer seed; the evaluation data are fixed.
The report directory gets PNG plots and an index.html showing them with the table.
"""
from __future__ import annotations

import argparse
import html
import itertools
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

from faircalib.calibrate import CalibConfig
from faircalib.data import exact_match, iter_documents, sample_tasks, sample_token_sequences
from faircalib.diagnostics import (
    align_traces,
    first_false_commit,
    post_commit_mismatch,
    rank_consistency,
    rollout_with_teacher,
    stability_lags,
    summarize_lags,
    teacher_forced_diagnostics,
)
from faircalib.diffusion import DecodeConfig, decode_text, generate, resolve_config
from faircalib.eval.fidelity import compare_to_reference
from faircalib.pipeline import ABLATIONS, MethodConfig, calibration_ids, run_method
from faircalib.probe import PriorSettings, ProbeConfig, probe_priors
from faircalib.quant.methods import methods as registry_methods

PROBE_SOURCE, CALIB_SOURCE, HELDOUT_TEXT = "builtin:tasks:probe", "builtin:mix:train", "builtin:mix:heldout"
RANK_CORPUS = "builtin:kjv:train"
EVAL_SEED = 20240601  # fixed: the evaluation data never change with --seeds
MAIN_METHODS = registry_methods()  # the method registry (faircalib.quant.methods)
ABLATION_ROWS = ("frontier_only", "reliability_only", "schedule_uniform", "schedule_late")
SCALARS = ("em_mean", "nll", "kl_to_fp", "top1_agree", "mean_flips", "flip_rate", "mean_margin",
           "mean_disagree_rate", "never_agree_rate", "lag_mean", "lag_p90", "amp_mean_all", "amp_mean_before",
           "amp_mean_after", "amp_jump", "amp_excess_before", "amp_excess_after", "false_commit_rate", "calib_time_s")

PROFILES = {
    # docs/method.md defaults scaled for this CPU (see the module docstring); every value lands in the JSON
    "default": {"n_eval": 500, "n_diag": 64, "n_nll": 64, "nll_seq_len": 64, "probe_n": 512, "probe_batch": 32,
                "calib_n": 64, "calib_seq_len": 64, "epochs": 15, "rank_n": 128},
    "smoke": {"n_eval": 10, "n_diag": 6, "n_nll": 4, "nll_seq_len": 16, "probe_n": 8, "probe_batch": 4,
              "calib_n": 4, "calib_seq_len": 16, "epochs": 1, "rank_n": 8},
}


def log(msg: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- models
def small_tokenizer(vocab_size: int = 320):
    """A byte-level BPE trained in about a second on 200 documents of the calibration text (for the
    tiny:/random: models, which have no tokenizer of their own)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<eos>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(itertools.islice(iter_documents(CALIB_SOURCE), 200)), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", mask_token="<mask>")


def load(source: str):
    """-> (model, tokenizer, description, decoding dict). tiny:ARCH = faircalib.models.tiny_model with a
    small BPE (tests, smoke); random:ARCH = a random zoo-shaped model (NOT trained)."""
    if source.startswith(("tiny:", "random:")):
        from faircalib.models import tiny_model

        kind, arch = source.split(":", 1)
        tok = small_tokenizer()
        ids = {"vocab_size": len(tok), "mask_token_id": 2, "pad_token_id": 0, "eos_token_id": 1}
        if kind == "random":
            ids.update(d_model=256, n_layers=4, n_heads=4, n_kv_heads=4 if arch == "llada" else 2,
                       d_ff=768 if arch == "llada" else 704)
        model = tiny_model(arch, seed=0, **ids)
        gen = 8 if kind == "tiny" else 16
        return model, tok, f"{kind} {arch} (random weights, NOT trained)", {"gen_length": gen, "steps": gen}
    from faircalib.models import decoding_defaults, load_dllm

    loaded = load_dllm(source)
    # the model card's decoding settings (required for zoo models), else the zoo defaults' shape
    decoding = decoding_defaults(source, required=source.startswith("zoo:")) or {"gen_length": 16, "steps": 16}
    return loaded.model.eval(), loaded.tokenizer, source, decoding


# ------------------------------------------------------------------------------------------- evaluation
def encode(tok, texts: list[str]) -> list[torch.Tensor]:
    return [torch.tensor(tok(t, add_special_tokens=False)["input_ids"], dtype=torch.long) for t in texts]


def evaluate(q, fp, tok, ev: dict) -> tuple[dict, dict]:
    """All metrics of one model -> (scalars, arrays for plots). Exact match, mismatch and stability lags use
    every eval prompt; the teacher-forced flips/margins and the amplification traces the first n_diag."""
    nd = ev["n_diag"]
    traj, disc = rollout_with_teacher(q, fp, ev["prompts"], ev["decode"], record=("top1",), teacher_rows=nd)
    preds = decode_text(tok, traj)
    hits: dict[str, list[bool]] = {}
    for ex, pred in zip(ev["tasks"], preds):
        hits.setdefault(ex.family, []).append(exact_match(pred, ex.answer))
    em = {f: sum(v) / len(v) for f, v in sorted(hits.items())}
    mm = post_commit_mismatch(traj.records["top1"], traj.commit_step, traj.tokens)
    lags, cens = stability_lags(traj.records["top1"], traj.commit_step, traj.tokens)
    lag = summarize_lags(lags, cens)
    teacher = ev["teacher"].select(slice(0, nd))
    tf = teacher_forced_diagnostics(q, teacher)
    ff = first_false_commit(traj.tokens[:nd], traj.commit_step[:nd], teacher.tokens)
    amp = align_traces(disc, ff)
    fid = compare_to_reference(q, ev["nll_ids"], ref=fp)
    out = {"em_mean": sum(em.values()) / len(em), "em_per_family": em, "nll": fid.nll, "kl_to_fp": fid.kl_to_ref,
           "top1_agree": fid.top1_agree, "mean_flips": tf["mean_flips"], "flip_rate": tf["flip_rate"],
           "mean_margin": tf["mean_margin"], "commit_events": tf["commit_events"],
           "mean_disagree_rate": mm["mean_disagree_rate"], "never_agree_rate": mm["never_agree_rate"],
           "lag_mean": lag.mean, "lag_p90": lag.p90, "lag_frac_unstable": lag.frac_unstable,
           "amp_mean_all": amp.mean_all, "amp_mean_before": amp.mean_before, "amp_mean_after": amp.mean_after,
           "amp_jump": amp.jump, "amp_excess_before": amp.excess_before, "amp_excess_after": amp.excess_after,
           "false_commit_rate": amp.as_dict()["false_commit_rate"]}
    arrays = {"lag_hist": lag.histogram, "amp_offsets": amp.offsets, "amp_mean": amp.mean, "amp_count": amp.count,
              "flips": tf["flips_per_sequence"], "examples": [{"q": e.question, "a": e.answer, "pred": p}
                                                           for e, p in list(zip(ev["tasks"], preds))[:3]]}
    return out, arrays


def eval_data(fp, tok, decoding: dict, prof: dict) -> dict:
    tasks = sample_tasks(prof["n_eval"], "heldout", seed=EVAL_SEED)
    prompts = encode(tok, [t.prompt for t in tasks])
    dcfg = resolve_config(fp, DecodeConfig.from_dict({k: v for k, v in decoding.items() if k != "seed"}))
    teacher = generate(fp, prompts, config=dcfg, record=("top1",))
    nll_ids = sample_token_sequences(tok, HELDOUT_TEXT, prof["n_nll"], prof["nll_seq_len"], seed=EVAL_SEED)
    return {"tasks": tasks, "prompts": prompts, "decode": dcfg, "teacher": teacher, "nll_ids": nll_ids,
            "n_diag": min(prof["n_diag"], len(tasks))}


def rank_prompts(n: int, seed: int) -> list[str]:
    """Second probe corpus: the first sentence-ish 100 characters of n KJV train chapters."""
    docs = list(iter_documents(RANK_CORPUS))
    rng = random.Random(seed)
    return [d[:100].rsplit(" ", 1)[0] for d in rng.sample(docs, n)]


# ------------------------------------------------------------------------------------------- plan
def plan_rows(methods: list[str], bits: str, extra_bits: list[str], ablation: bool) -> list[dict]:
    """Row = {label, method, bits, variant (prior variant name or None), same_as (label of an identical run)}."""
    rows = []
    for m in methods:
        rows.append({"label": m, "method": m, "bits": bits, "variant": "both" if m == "faircalib" else None})
    for b in extra_bits:
        for m in ("flatquant", "faircalib"):
            rows.append({"label": f"{m}@{b}", "method": m, "bits": b, "variant": "both" if m == "faircalib" else None})
    if ablation:
        rows.append({"label": "abl:uniform", "method": "flatquant", "bits": bits, "variant": None,
                     "same_as": "flatquant" if "flatquant" in methods else None})
        for name in ABLATION_ROWS:
            rows.append({"label": f"abl:{name}", "method": "faircalib", "bits": bits, "variant": name})
        rows.append({"label": "abl:both(early)", "method": "faircalib", "bits": bits, "variant": "both",
                     "same_as": "faircalib" if "faircalib" in methods else None})
    return rows


def prior_variants(rows: list[dict]) -> dict[str, PriorSettings]:
    names = sorted({r["variant"] for r in rows if r["variant"]})
    out = {}
    for n in names:
        settings = ABLATIONS[n][1]
        out[n] = settings if settings is not None else PriorSettings()
    return out


# ------------------------------------------------------------------------------------------- summary
def summarize(results: list[dict]) -> dict:
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["label"], []).append(r["metrics"])
    out = {}
    for label, ms in by.items():
        out[label] = {}
        for k in SCALARS:
            vals = [m[k] for m in ms if k in m and m[k] is not None and not math.isnan(m[k])]
            if vals:
                mean = sum(vals) / len(vals)
                std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
                out[label][k] = {"mean": mean, "std": std, "n": len(vals)}
        fams = sorted({f for m in ms for f in m["em_per_family"]})
        out[label]["em_per_family"] = {f: sum(m["em_per_family"].get(f, 0.0) for m in ms) / len(ms) for f in fams}
    return out


def orderings(summary: dict) -> dict:
    """The paper's claimed orderings, checked on EM (higher better), NLL and flips (lower better)."""
    def get(label, key):
        return summary.get(label, {}).get(key, {}).get("mean")

    checks = {}
    pairs = [("rtn", "quarot"), ("quarot", "flatquant"), ("flatquant", "faircalib"), ("rtn", "faircalib")]
    pairs += [(f"flatquant@{b}", f"faircalib@{b}") for b in ("w3a4", "w8a8", "w4a8")]
    pairs += [("abl:uniform", "abl:frontier_only"), ("abl:uniform", "abl:reliability_only"),
              ("abl:frontier_only", "abl:both(early)"), ("abl:reliability_only", "abl:both(early)"),
              ("abl:schedule_late", "abl:schedule_uniform"), ("abl:schedule_uniform", "abl:both(early)")]
    for worse, better in pairs:
        row = {}
        for key, higher in (("em_mean", True), ("nll", False), ("mean_flips", False), ("kl_to_fp", False)):
            a, b = get(worse, key), get(better, key)
            if a is None or b is None:
                continue
            row[key] = {worse: a, better: b, "holds": (b > a) if higher else (b < a), "delta": b - a}
        if row:
            checks[f"{worse} < {better}"] = row
    return checks


# ------------------------------------------------------------------------------------------- report
def _fmt(cell: dict | None, digits: int | str = 3) -> str:
    if not cell:
        return "-"
    spec = ".2e" if digits == "e" else f".{digits}f"
    return f"{cell['mean']:{spec}}" + (f" ± {cell['std']:{spec}}" if cell["n"] > 1 else "")


TABLE_COLS = [("em_mean", "EM", 3), ("nll", "NLL", 4), ("kl_to_fp", "KL→FP", 4), ("mean_flips", "flips/seq", 3),
              ("mean_margin", "margin", 3), ("mean_disagree_rate", "mean_disagree", 3),
              ("never_agree_rate", "never_agree", 3), ("lag_mean", "lag mean", 2), ("amp_excess_after", "amp excess", "e"),
              ("false_commit_rate", "false-commit rate", 3)]


def text_table(summary: dict, labels: list[str]) -> str:
    head = ["row"] + [c[1] for c in TABLE_COLS]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for lab in labels:
        s = summary.get(lab, {})
        lines.append(" | ".join([lab] + [_fmt(s.get(k), d) for k, _, d in TABLE_COLS]))
    return "\n".join(lines)


def make_plots(out: Path, summary: dict, arrays: dict, priors: dict, labels: list[str]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    made = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, dpi=72)
        plt.close(fig)
        made.append(name)

    # stability-lag histogram (first seed): FP vs the main quantized rows
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    show = [lab for lab in ("fp", "rtn", "quarot", "flatquant", "faircalib") if lab in arrays]
    width = 0.8 / max(len(show), 1)
    for j, lab in enumerate(show):
        h = torch.tensor(arrays[lab]["lag_hist"], dtype=torch.float64)
        if h.sum() > 0:
            ax.bar(torch.arange(len(h)) + j * width, (h / h.sum()).tolist(), width=width, label=lab)
    ax.set_yscale("log")
    ax.set_xlabel("stability lag (steps after commit)")
    ax.set_ylabel("fraction of positions")
    ax.legend(fontsize=7)
    save(fig, "stability_lag.png")

    # prior curves (first seed): every probed variant + the second corpus
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    variants = sorted({name.rsplit(" (", 1)[0] for name in priors})
    colors = {v: f"C{i}" for i, v in enumerate(variants)}
    for name, curve in priors.items():
        v = name.rsplit(" (", 1)[0]
        ax.plot(range(len(curve)), curve, marker=".", color=colors[v], ls="--" if "(kjv)" in name else "-",
                lw=1.6 if v == "both" else 1.0, label=name)
    ax.set_xlabel("answer-window position")
    ax.set_ylabel("prior weight (mean 1)")
    ax.legend(fontsize=6)
    save(fig, "prior_curve.png")

    # amplification traces aligned at the first false commit (first seed)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for lab in [x for x in ("rtn", "quarot", "flatquant", "faircalib") if x in arrays]:
        a = arrays[lab]
        if a["amp_offsets"]:
            ax.plot(a["amp_offsets"], a["amp_mean"], marker=".", label=lab)
    ax.axvline(0, color="red", lw=0.8)
    ax.set_xlabel("step - first false commit")
    ax.set_ylabel("prob. discrepancy to FP")
    ax.legend(fontsize=7)
    save(fig, "amplification.png")

    # flips per sequence (mean ± std over seeds) per row
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(labels)), 3.2))
    vals = [summary.get(lab, {}).get("mean_flips") for lab in labels]
    ax.bar(range(len(labels)), [v["mean"] if v else 0 for v in vals], yerr=[v["std"] if v else 0 for v in vals])
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("teacher-forced flips / sequence")
    save(fig, "flips.png")

    # exact match per row
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(labels)), 3.2))
    vals = [summary.get(lab, {}).get("em_mean") for lab in labels]
    ax.bar(range(len(labels)), [v["mean"] if v else 0 for v in vals], yerr=[v["std"] if v else 0 for v in vals])
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("exact match (held-out tasks)")
    save(fig, "exact_match.png")
    return made


def write_html(out: Path, result: dict, labels: list[str], plots: list[str]) -> None:
    s = result["summary"]
    head = "".join(f"<th>{html.escape(c[1])}</th>" for c in TABLE_COLS)
    body = []
    for lab in labels:
        cells = "".join(f"<td>{html.escape(_fmt(s.get(lab, {}).get(k), d))}</td>" for k, _, d in TABLE_COLS)
        body.append(f"<tr><td><b>{html.escape(lab)}</b></td>{cells}</tr>")
    fams = sorted({f for lab in labels for f in s.get(lab, {}).get("em_per_family", {})})
    fam_rows = "".join(
        "<tr><td>" + html.escape(lab) + "</td>" + "".join(
            f"<td>{s.get(lab, {}).get('em_per_family', {}).get(f, float('nan')):.3f}</td>" for f in fams) + "</tr>"
        for lab in labels)
    checks = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(
            f"<td>{k}: {'holds' if v['holds'] else 'does NOT hold'} (Δ {v['delta']:+.4f})</td>"
            for k, v in row.items()) + "</tr>" for name, row in result["orderings"].items())
    imgs = "".join(f'<figure><img src="{p}" alt="{p}"><figcaption>{p}</figcaption></figure>' for p in plots)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>FAIR-Calib quality: {html.escape(result['model'])}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #bbb;padding:2px 6px;text-align:right}} figure{{display:inline-block;margin:4px}}</style>
</head><body><h1>FAIR-Calib quality report — {html.escape(result['model'])} ({html.escape(result['settings']['bits'])})</h1>
<p>{html.escape(result['description'])}; seeds {result['settings']['seeds']}; mean ± std over seeds.
Wall time {result['wall_time_s']:.0f} s.</p>
<h2>Main table</h2><table><tr><th>row</th>{head}</tr>{''.join(body)}</table>
<h2>Exact match per task family</h2><table><tr><th>row</th>{''.join(f'<th>{f}</th>' for f in fams)}</tr>{fam_rows}</table>
<h2>Paper orderings</h2><table>{checks}</table>
<h2>Cross-corpus rank consistency of the prior</h2><pre>{html.escape(json.dumps(result.get('rank_consistency'), indent=1))}</pre>
<h2>Plots (first seed)</h2>{imgs}
<h2>Settings</h2><pre>{html.escape(json.dumps(result['settings'], indent=1))}</pre>
</body></html>"""
    (out / "index.html").write_text(page, encoding="utf-8")


# ------------------------------------------------------------------------------------------- main
def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="zoo:tiny-dream")
    p.add_argument("--bits", default="w4a4")
    p.add_argument("--methods", default="fp,rtn,quarot,flatquant,faircalib")
    p.add_argument("--extra-bits", default="", help="comma list: FlatQuant vs FAIR-Calib rows at these bits")
    p.add_argument("--ablation", action="store_true")
    p.add_argument("--seeds", default="0")
    p.add_argument("--json", default=None, help="write the result JSON here (it is always printed too)")
    p.add_argument("--report", default=None, help="directory for PNG plots + index.html")
    p.add_argument("--smoke", action="store_true", help="tiny settings (tests)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--decoding", default=None, help="JSON of DecodeConfig fields overriding the model's defaults")
    for k in PROFILES["default"]:
        p.add_argument("--" + k.replace("_", "-"), type=int, default=None, dest=k,
                       help=f"override (default {PROFILES['default'][k]})")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    a = parse(argv)
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    t_all = time.perf_counter()
    prof = dict(PROFILES["smoke" if a.smoke else "default"])
    prof.update({k: getattr(a, k) for k in PROFILES["default"] if getattr(a, k) is not None})
    methods = [m for m in a.methods.split(",") if m]
    bad = [m for m in methods if m not in MAIN_METHODS]
    if bad:
        raise SystemExit(f"unknown method {bad[0]!r}; allowed: {', '.join(MAIN_METHODS)}")
    seeds = [int(s) for s in a.seeds.split(",") if s != ""]
    extra_bits = [b for b in a.extra_bits.split(",") if b]

    fp, tok, desc, decoding = load(a.model)
    weights = None
    if not a.model.startswith(("tiny:", "random:")):
        from faircalib.models import weights_hash

        weights = weights_hash(a.model)
    if a.decoding:
        decoding = {**decoding, **json.loads(a.decoding)}
    fp.requires_grad_(False)
    log(f"model {desc}; decoding {decoding}")
    ev = eval_data(fp, tok, decoding, prof)
    dc = ev["decode"]
    probe_base = ProbeConfig(prompts=PROBE_SOURCE, n_samples=prof["probe_n"], steps=dc.steps, window=dc.gen_length,
                             block_length=dc.block_length if dc.schedule == "llada" else None,
                             batch_size=prof["probe_batch"])
    calib = CalibConfig(data=CALIB_SOURCE, n=prof["calib_n"], seq_len=prof["calib_seq_len"], epochs=prof["epochs"])
    rows = plan_rows(methods, a.bits, extra_bits, a.ablation)
    variants = prior_variants(rows)
    settings = {
        "model": a.model, "model_weights_sha256": weights, "bits": a.bits, "methods": methods, "extra_bits": extra_bits, "ablation": a.ablation,
        "seeds": seeds, "profile": "smoke" if a.smoke else "default", **prof,
        "decoding": dc.to_dict(), "probe": probe_base.to_dict(), "prior_variants": {k: v.to_dict() for k, v in
                                                                                    variants.items()},
        "floor": calib.floor, "calib_source": calib.data, "calib": calib.to_dict(), "eval_tasks": "heldout split",
        "eval_seed": EVAL_SEED, "nll_source": HELDOUT_TEXT, "rank_corpus": RANK_CORPUS, "threads": a.threads,
        "spec_defaults_scaled": {"probe_n": f"512 -> {prof['probe_n']}",
                                 "T, L": f"256, 256 -> {dc.steps}, {dc.gen_length} (model's decoding)",
                                 "calib": f"128 x 1024 -> {prof['calib_n']} x {prof['calib_seq_len']}"},
    }
    results: list[dict] = []
    first_arrays: dict[str, dict] = {}
    prior_curves: dict[str, list[float]] = {}
    rank: dict[str, dict] = {}
    timings: dict[str, float] = {}
    seedless_done: dict[str, dict] = {}

    for si, seed in enumerate(seeds):
        priors = {}
        if variants:
            t0 = time.perf_counter()
            pcfg = probe_base.replace(seed=seed)
            priors = probe_priors(fp, tok, None, pcfg, variants)
            timings[f"probe_seed{seed}_s"] = time.perf_counter() - t0
            log(f"seed {seed}: probed {pcfg.n_samples} prompts ({len(variants)} variants) in "
                f"{timings[f'probe_seed{seed}_s']:.1f}s")
            if si == 0:
                prior_curves = {f"{k} (tasks)": v.curve.tolist() for k, v in priors.items()}
                # cross-corpus rank consistency: the same variants probed on KJV text snippets
                t0 = time.perf_counter()
                other = probe_priors(fp, tok, rank_prompts(prof["rank_n"], seed), pcfg.replace(n_samples=prof["rank_n"]),
                                     variants)
                timings["rank_probe_s"] = time.perf_counter() - t0
                for k in variants:
                    rank[k] = rank_consistency(priors[k].curve, other[k].curve)
                    prior_curves[f"{k} (kjv)"] = other[k].curve.tolist()
        calib_ids = calibration_ids(tok, calib.replace(data_seed=seed))
        done_here: dict[str, dict] = {}
        for row in rows:
            label = row["label"]
            seedless = row["method"] in ("fp", "rtn")
            if row.get("same_as") and row["same_as"] in done_here:
                results.append({**done_here[row["same_as"]], "label": label, "same_run_as": row["same_as"]})
                continue
            if seedless and label in seedless_done:
                rec = {**seedless_done[label], "seed": seed, "seed_independent": True}
                results.append(rec)
                done_here[label] = rec
                continue
            cfg = MethodConfig(method=row["method"], bits=row["bits"], calibration=calib.replace(data_seed=seed),
                               seed=seed,
                               probe=probe_base.replace(seed=seed, prior=variants.get(row["variant"], PriorSettings())))
            t0 = time.perf_counter()

            def progress(e, label=label):
                if e.get("event") == "block_done":
                    log(f"  {label}: block {e['block'] + 1}/{e['n_blocks']} loss {e.get('init_loss')} -> "
                        f"{e.get('final_loss')} ({e.get('time_s', 0):.0f}s)")

            q, info = run_method(fp, tok, cfg, prior=priors.get(row["variant"]) if row["variant"] else None,
                                 calib_ids=calib_ids, progress=progress)
            t_cal = time.perf_counter() - t0
            metrics, arrays = evaluate(q, fp, tok, ev)
            metrics["calib_time_s"] = t_cal
            t_tot = time.perf_counter() - t0
            rec = {"label": label, "seed": seed, "method": row["method"], "bits": row["bits"],
                   "variant": row["variant"], "metrics": metrics,
                   "prior_key": info.get("prior", {}).get("cache_key"), "block_losses": info.get("block_losses"),
                   "fallbacks": info.get("quant", {}).get("fallbacks")}
            results.append(rec)
            done_here[label] = rec
            if seedless:
                seedless_done[label] = rec
            if si == 0:
                first_arrays[label] = arrays
            timings[f"{label}_seed{seed}_s"] = t_tot
            log(f"seed {seed} {label:22s} EM {metrics['em_mean']:.3f} NLL {metrics['nll']:.4f} "
                f"flips {metrics['mean_flips']:.2f} margin {metrics['mean_margin']:.3f} ({t_cal:.0f}s calib, "
                f"{t_tot - t_cal:.0f}s eval)")
            del q

    labels = [r["label"] for r in rows]
    summary = summarize(results)
    out = {"model": a.model, "description": desc, "settings": settings, "summary": summary,
           "orderings": orderings(summary), "rank_consistency": rank, "prior_curves": prior_curves,
           "rows": results, "traces_first_seed": {k: {kk: v[kk] for kk in ("amp_offsets", "amp_mean", "amp_count",
                                                                            "lag_hist", "examples")}
                                                   for k, v in first_arrays.items()},
           "timings_s": timings, "wall_time_s": time.perf_counter() - t_all}
    out["table"] = text_table(summary, labels)
    if a.report:
        rep = Path(a.report)
        plots = make_plots(rep, summary, first_arrays, prior_curves, labels)
        write_html(rep, out, labels, plots)
        out["report"] = {"dir": str(rep), "plots": plots, "html": "index.html"}
    text = json.dumps(out, indent=1, default=float)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(text)
    print(text)
    log("\n" + out["table"])
    return out


if __name__ == "__main__":
    main()
