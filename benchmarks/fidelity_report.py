"""HTML + PNG report of a benchmarks/fidelity.py result: a verdict paragraph drawn from the paired CIs, a
glossary, the method table (mean +- std over seeds), the paired-difference table with CIs and verdicts,
delta-vs-FP plots with CIs, per-position error over the prior curve, and the settings table.

    python benchmarks/fidelity.py --model zoo:long-llada --report-only --json J --report DIR
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path

GLOSSARY = {
    "EM": "exact match: the decoded answer window (cut at the first EOS) equals the reference answer "
          "(whitespace-normalised), on held-out examples; decoded greedily with the model's default policy.",
    "flips/seq": "teacher-forced commit-step flips per sequence: on the FP teacher's own trajectory, the number "
                 "of positions where the quantized model's argmax at the teacher's commit step differs from "
                 "the token the teacher wrote (lower is better).",
    "never_agree": "fraction of a sequence's committed positions whose later top-1 never again equals the "
                   "committed token, on the model's own trajectory (lower is better).",
    "KL": "KL(FP || quantized) of the next-token distributions at still-masked window positions of the "
          "teacher's states, averaged per sequence (nats; lower is better).",
    "delta": "paired difference a - b, averaged over seeds x examples (a seed fixes the probe, the calibration "
             "sample and the quantizer seed for both methods).",
    "95% CI": "percentile interval of a two-way (seeds x examples) bootstrap of the paired difference.",
    "verdict": "holds: the whole CI is on the claimed side of 0; reversed: the whole CI is on the other side; "
               "not resolved: the CI contains 0 (a tie at this resolution, not a failure).",
    "prior": "the Stage I position prior (mean over probe samples, mean 1 over the window) of FAIR-Calib.",
}
METRIC_LABELS = {"em": "EM", "flips": "flips/seq", "never_agree": "never_agree", "kl": "KL"}
COLORS = {"fp": "#000000", "rtn": "#d62728", "quarot": "#9467bd", "flatquant": "#1f77b4", "faircalib": "#ff7f0e",
          "window_uniform": "#2ca02c", "prior_floor1": "#8c564b", "frontier_only": "#e377c2",
          "reliability_only": "#7f7f7f", "schedule_uniform": "#bcbd22", "schedule_late": "#17becf",
          "masked_flatquant": "#393b79", "masked_faircalib": "#ad494a"}
ORDER = ["fp", "rtn", "quarot", "flatquant", "faircalib", "window_uniform", "prior_floor1", "frontier_only",
         "reliability_only", "schedule_uniform", "schedule_late", "masked_flatquant", "masked_faircalib"]


def fmt(x: float | None, metric: str = "") -> str:
    """Significant digits, never a column of rounded zeros: EM as a percentage, small values in
    scientific notation."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if metric == "em":
        return f"{100 * x:.1f}%"
    if x == 0:
        return "0"
    return f"{x:.3g}" if abs(x) >= 1e-3 else f"{x:.2e}"


def fmt_delta(d: dict, metric: str) -> str:
    if metric == "em":
        return f"{100 * d['delta']:+.1f} pts [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"
    # a bootstrap bound that is a difference of equal means comes out as float noise (e.g. -4e-21): show 0
    v = [0.0 if abs(d[k]) < 1e-12 else d[k] for k in ("delta", "ci_low", "ci_high")]
    return f"{v[0]:+.3g} [{v[1]:+.3g}, {v[2]:+.3g}]"


def verdict_paragraph(result: dict) -> str:
    p = result["paired"]
    s = result["settings"]
    main = p.get("faircalib_vs_flatquant")
    if not main:
        return "The FAIR-Calib vs FlatQuant comparison has not finished yet; no verdict."
    em = main["em"]
    n = f"{em['n_seeds']} seeds x {em['n_examples']} held-out examples"
    words = {"holds": "FAIR-Calib is better than FlatQuant", "reversed": "FAIR-Calib is worse than FlatQuant",
             "not resolved": "FAIR-Calib and FlatQuant are not distinguishable"}
    text = (f"On {s['model']} at {s['bits']} ({n}), {words[em['verdict']]} in exact match: "
            f"{fmt_delta(em, 'em')} (95% CI). ")
    others = [f"{METRIC_LABELS[m]}: {fmt_delta(main[m], m)}, {main[m]['verdict']}" for m in ("flips", "never_agree", "kl")
              if m in main]
    text += "Other fidelity metrics (claim: FAIR-Calib lower): " + "; ".join(others) + ". "
    abl = [k for k in p if k.endswith("_vs_flatquant") and k != "faircalib_vs_flatquant"]
    held = [k.removesuffix("_vs_flatquant") for k in abl if p[k]["em"]["verdict"] == "holds"]
    rev = [k.removesuffix("_vs_flatquant") for k in abl if p[k]["em"]["verdict"] == "reversed"]
    if abl:
        text += (f"Of {len(abl)} ablation rows compared with uniform weights (FlatQuant) in EM, "
                 f"{len(held)} are better ({', '.join(held) or 'none'}), {len(rev)} worse ({', '.join(rev) or 'none'}), "
                 f"the rest not resolved. ")
    return text + ablation_sentence(p) + position_sentence(result.get("position_analysis"))


BASELINES = ("flatquant", "rtn", "quarot")  # not ablations of FAIR-Calib


def ablation_sentence(paired: dict) -> str:
    """FAIR-Calib against each of its own ablations in EM, from the CIs: which removal costs accuracy
    (FAIR-Calib better), which helps (FAIR-Calib worse), which is a tie at this resolution."""
    better, worse, tied = [], [], []
    for key, pair in paired.items():
        a, _, b = key.partition("_vs_")
        if a == "faircalib" and b not in BASELINES:
            other, sign = b, 1  # delta = faircalib - other
        elif b == "faircalib" and a not in BASELINES:
            other, sign = a, -1  # delta = other - faircalib
        else:
            continue
        v = pair["em"]["verdict"]
        if v == "not resolved":
            tied.append(other)
        else:
            (better if (v == "holds") == (sign == 1) else worse).append(other)
    if not (better or worse or tied):
        return ""
    return (f"FAIR-Calib against its own ablations in EM: better than {', '.join(better) or 'none'}; "
            f"worse than {', '.join(worse) or 'none'}; not resolved against {', '.join(tied) or 'none'}. ")


def position_sentence(pa: dict | None) -> str:
    """One descriptive sentence on where FlatQuant errs vs where the prior weighs (no claim: seed means)."""
    fq = (pa or {}).get("methods", {}).get("flatquant")
    if fq is None:
        return ""
    pr = pa["prior"]
    parts = list(pa["parts"])
    flips = " / ".join(fmt(fq["flip_by_part"][p]) for p in parts)
    weights = " / ".join(f"{pr['by_part'][p]:.3g}" for p in parts)
    text = (f"Where the errors are (descriptive, seed means): FlatQuant's teacher-forced flip rate by window "
            f"third ({' / '.join(parts)}) is {flips}, where the prior weighs {weights} "
            f"(range {pr['min']:.3g}–{pr['max']:.3g}, max/min {pr['max'] / pr['min']:.2f})")
    rho = fq["spearman_prior_vs_flip"]
    if rho is None:
        return text + "."
    side = ("more weight where FlatQuant errs more" if rho > 0 else "less weight where FlatQuant errs more")
    return text + f"; Spearman ρ(prior, FlatQuant flip rate) = {rho:+.2f}, i.e. the prior tends to put {side}."


def _save(fig, out: Path, name: str, made: list[str]) -> None:
    fig.tight_layout()
    fig.savefig(out / name, dpi=160)
    import matplotlib.pyplot as plt

    plt.close(fig)
    made.append(name)


def make_plots(result: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[str] = []
    methods = result["methods"]
    names = [n for n in ORDER if n in methods and n != "fp"]
    # delta vs FP with CIs, one panel per metric
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8))
    for ax, metric in zip(axes, ("em", "flips", "never_agree", "kl")):
        ys, lo, hi, cols = [], [], [], []
        for n in names:
            d = methods[n].get("delta_vs_fp", {}).get(metric)
            if d is None:
                continue
            scale = 100 if metric == "em" else 1
            ys.append(scale * d["delta"])
            lo.append(scale * (d["delta"] - d["ci_low"]))
            hi.append(scale * (d["ci_high"] - d["delta"]))
            cols.append(n)
        x = list(range(len(ys)))
        ax.bar(x, ys, color=[COLORS.get(c, "#444444") for c in cols])
        ax.errorbar(x, ys, yerr=[lo, hi], fmt="none", ecolor="black", capsize=3, lw=1)
        ax.set_xticks(x, cols, rotation=60, ha="right", fontsize=7)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(f"Δ {METRIC_LABELS[metric]} vs FP (95% CI)", fontsize=9)
        ax.set_ylabel("EM points" if metric == "em" else METRIC_LABELS[metric])
    _save(fig, out, "delta_vs_fp.png", made)

    # per-position error laid over the prior curve: the paper's central picture
    prior = _mean_prior(result)
    L = len(next(iter(methods.values()))["flip_by_pos"])
    for metric, label in (("flip_by_pos", "teacher-forced flip rate"), ("kl_by_pos", "KL(FP||Q) while masked")):
        fig, ax = plt.subplots(figsize=(7.5, 3.8))
        for n in ("rtn", "quarot", "flatquant", "faircalib", "window_uniform", "masked_faircalib"):
            if n in methods:
                ax.plot(range(L), methods[n][metric], label=n, color=COLORS[n], lw=1.4)
        ax.set_xlabel("answer-window position (0 = first)")
        ax.set_ylabel(label)
        ax.set_title(f"Per-position error vs the Stage I prior ({result['settings']['model']}, "
                     f"{result['settings']['bits']})", fontsize=9)
        if prior is not None:
            ax2 = ax.twinx()
            ax2.plot(range(L), prior, color="black", ls="--", lw=1.2, label="prior (FAIR-Calib)")
            ax2.set_ylabel("prior weight (mean 1)")
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = ax2.get_legend_handles_labels()
            ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper right")
        else:
            ax.legend(fontsize=7)
        _save(fig, out, f"{metric}.png", made)

    # EM by family
    fams = sorted(methods[names[0]]["em_per_family"]) if names else []
    if fams:
        fig, ax = plt.subplots(figsize=(8, 3.6))
        show = [n for n in ("fp", "rtn", "quarot", "flatquant", "faircalib") if n in methods]
        w = 0.8 / len(show)
        for j, n in enumerate(show):
            ax.bar([i + j * w for i in range(len(fams))], [100 * methods[n]["em_per_family"][f] for f in fams],
                   width=w, label=n, color=COLORS[n])
        ax.set_xticks([i + 0.4 - w / 2 for i in range(len(fams))], fams)
        ax.set_ylabel("EM (%)")
        ax.set_title("Exact match by task family (mean over seeds)", fontsize=9)
        ax.legend(fontsize=7)
        _save(fig, out, "em_by_family.png", made)
    return made


def _ranks(xs: list[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions), for Spearman's rho."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman rank correlation of two equal-length curves (None if either is constant)."""
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return None if va == 0 or vb == 0 else cov / math.sqrt(va * vb)


def position_analysis(result: dict, parts: int = 3) -> dict | None:
    """Where the errors are vs where the prior puts weight (descriptive, over the seed-mean curves):
    the prior's range and its mean per window part (early / middle / late thirds), each method's flip rate
    and KL per part, and Spearman's rho between the prior and each method's per-position flip rate (does the
    prior up-weight the positions where the quantized model actually errs?)."""
    prior, methods = _mean_prior(result), result.get("methods", {})
    if prior is None:
        return None
    L = len(prior)
    bounds = [round(i * L / parts) for i in range(parts + 1)]
    names = ("early", "middle", "late") if parts == 3 else tuple(f"part{i}" for i in range(parts))

    def by_part(curve: list[float]) -> dict:
        return {names[i]: sum(curve[bounds[i]:bounds[i + 1]]) / (bounds[i + 1] - bounds[i]) for i in range(parts)}

    out = {"window": L, "parts": {names[i]: [bounds[i], bounds[i + 1] - 1] for i in range(parts)},
           "prior": {"min": min(prior), "max": max(prior), "by_part": by_part(prior)}, "methods": {}}
    for n in ("rtn", "quarot", "flatquant", "faircalib", "window_uniform", "masked_faircalib"):
        if n in methods:
            out["methods"][n] = {"flip_by_part": by_part(methods[n]["flip_by_pos"]),
                                 "kl_by_part": by_part(methods[n]["kl_by_pos"]),
                                 "spearman_prior_vs_flip": spearman(prior, methods[n]["flip_by_pos"])}
    return out


def _position_table(pa: dict | None) -> str:
    if pa is None:
        return "<p>No FAIR-Calib rows yet: no prior to compare with.</p>"
    parts = list(pa["parts"])
    head = "".join(f"<th>{p} {pa['parts'][p][0]}–{pa['parts'][p][1]}</th>" for p in parts)
    rows = [f"<tr><td>prior weight (range {pa['prior']['min']:.3g}–{pa['prior']['max']:.3g})</td>"
            + "".join(f"<td>{pa['prior']['by_part'][p]:.3g}</td>" for p in parts) + "<td>-</td></tr>"]
    for n, m in pa["methods"].items():
        rho = m["spearman_prior_vs_flip"]
        rows.append(f"<tr><td>{html.escape(n)} flip rate</td>" + "".join(f"<td>{fmt(m['flip_by_part'][p])}</td>" for p in parts)
                    + f"<td>{'-' if rho is None else f'{rho:+.2f}'}</td></tr>")
    return (f"<table><tr><th>curve (seed means)</th>{head}<th>Spearman ρ(prior, flip rate)</th></tr>{''.join(rows)}"
            "</table><p>Descriptive: per-position curves are averaged over seeds; the claims are in the paired "
            "table above.</p>")


def _mean_prior(result: dict) -> list[float] | None:
    curves = [r["prior_curve"] for r in result["rows"].values() if r["name"] == "faircalib" and r.get("prior_curve")]
    if not curves:
        return None
    return [sum(v) / len(curves) for v in zip(*curves)]


def kernels_of(result: dict) -> dict[str, list[str]]:
    """bf16 GEMM kernel -> the row keys evaluated with it (rows from before the field existed ran on a CPU
    with bf16 units, natively)."""
    by: dict[str, list[str]] = {}
    for key, row in result["rows"].items():
        by.setdefault(row.get("bf16_kernel", "native bf16 GEMM (not recorded)"), []).append(key)
    return by


def build_report(result: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    made = make_plots(result, out) if result.get("methods") else []
    s = result["settings"]
    esc = html.escape
    rows = []
    for n in [n for n in ORDER if n in result["methods"]]:
        m = result["methods"][n]
        cells = [f"{fmt(m[k]['mean'], k)} ± {fmt(m[k]['std'], k)}" if m[k]["n_seeds"] > 1 else fmt(m[k]["mean"], k)
                 for k in ("em", "flips", "never_agree", "kl")]
        rows.append(f"<tr><td>{esc(n)}</td><td>{m['em']['n_seeds']}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    prows = []
    for key, entry in result["paired"].items():
        cells = "".join(f"<td>{esc(fmt_delta(entry[k], k))}<br><b>{entry[k]['verdict']}</b></td>"
                        for k in ("em", "flips", "never_agree", "kl"))
        prows.append(f"<tr><td>{esc(key.replace('_vs_', ' vs '))}</td>{cells}</tr>")
    sel = s.get("bit_selection", {})
    bit_rows = "".join(f"<tr><td>{b}</td><td>{fmt(v['fp_em'], 'em')}</td><td>{fmt(v['rtn_em'], 'em')}</td>"
                       f"<td>{v['loss_points']:.1f}</td></tr>" for b, v in sel.get("losses", {}).items())
    settings_rows = "".join(f"<tr><td>{esc(str(k))}</td><td>{esc(json.dumps(v) if not isinstance(v, str) else v)}</td></tr>"
                            for k, v in s.items() if k != "bit_selection")
    kernel_rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(', '.join(v))}</td></tr>" for k, v in kernels_of(result).items())
    gloss = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in GLOSSARY.items())
    imgs = "".join(f'<figure><img src="{n}" width="900"><figcaption>{n}</figcaption></figure>' for n in made)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>FAIR-Calib fidelity: {esc(s['model'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{border:1px solid #ccc;padding:3px 6px;
font-size:13px}}table{{border-collapse:collapse;margin:1em 0}}</style></head><body>
<h1>FAIR-Calib fidelity — {esc(s['model'])} at {esc(s['bits'])}</h1>
<h2>Verdict</h2><p>{esc(verdict_paragraph(result))}</p>
<h2>Methods (mean ± std over seeds)</h2><table><tr><th>method</th><th>seeds</th><th>EM</th><th>flips/seq</th>
<th>never_agree</th><th>KL</th></tr>{''.join(rows)}</table>
<h2>Paired differences a − b (95% CI over seeds × examples) and verdict for "a better than b"</h2>
<table><tr><th>pair</th><th>EM</th><th>flips/seq</th><th>never_agree</th><th>KL</th></tr>{''.join(prows)}</table>
<h2>Bit setting</h2><p>{esc(sel.get('reason', ''))}: chose <b>{esc(s['bits'])}</b> (selection set: {esc(str(sel.get('set')))},
n = {sel.get('n')})</p><table><tr><th>bits</th><th>FP EM</th><th>RTN EM</th><th>RTN loss (points)</th></tr>{bit_rows}</table>
<h2>Per-position analysis: where the errors are vs where the prior weighs</h2>{_position_table(position_analysis(result))}
<h2>Plots</h2>{imgs}
<h2>Glossary</h2><dl>{gloss}</dl>
<h2>Settings</h2><table>{settings_rows}</table>
<h3>Evaluation kernel per row</h3><table><tr><th>bf16 GEMM</th><th>rows</th></tr>{kernel_rows}</table></body></html>"""
    (out / "index.html").write_text(page)
    return out / "index.html"
