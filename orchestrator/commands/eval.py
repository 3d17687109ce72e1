"""`faircalib eval SOURCE --tasks ...`: lm-eval-harness on a model directory, zoo:NAME or a quantized
checkpoint directory; prints a table and optionally writes the JSON result (scores, wall time per task,
settings). Thin wrapper over faircalib.eval.harness.evaluate_source."""
from __future__ import annotations

import json
from pathlib import Path

import click
from faircalib.orchestrator.progress import ProgressView, quiet_option


@click.command("eval")
@click.argument("source")
@click.option("--tasks", required=True, help="Comma-separated lm-eval task/group names: the offline suite "
              "(faircalib_suite, faircalib_gen, faircalib_mc, faircalib_arith, ...) or lm-eval's own "
              "(piqa, hellaswag, ... need their datasets).")
@click.option("--limit", type=float, default=None, help="Examples per task (an integer; < 1: a fraction).")
@click.option("--mc-num", type=int, default=128, show_default=True,
              help="Monte Carlo draws per log-likelihood request.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Masked rows per forward pass.")
@click.option("--gen-batch-size", type=int, default=16, show_default=True, help="Prompts decoded together.")
@click.option("--gen-length", type=int, default=None, help="Answer window (default: the model card's).")
@click.option("--steps", type=int, default=None, help="Decoding steps (default: the model card's).")
@click.option("--block-length", type=int, default=None, help="Semi-AR block length (LLaDA policies).")
@click.option("--policy", default=None, help="Commit policy (default: the model's).")
@click.option("--no-greedy-check", is_flag=True, help="Skip is_greedy (a decode per loglikelihood request).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N (auto = CUDA when "
              "available).")
@click.option("--dtype", default="auto", show_default=True, help="FP weights' dtype: auto | bfloat16 | float32 | "
              "float16 (auto = bfloat16 on CUDA, the stored dtype on CPU; a quantized checkpoint keeps its own).")
@click.option("--threads", type=int, default=1, show_default=True, help="torch threads (the machine is shared).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the result here.")
@quiet_option
def eval_cmd(source: str, tasks: str, limit: float | None, mc_num: int, batch_size: int, gen_batch_size: int,
             gen_length: int | None, steps: int | None, block_length: int | None, policy: str | None,
             no_greedy_check: bool, seed: int, device: str, dtype: str, threads: int, json_out: str | None,
             quiet: bool) -> None:
    """Evaluate SOURCE (model dir, zoo:NAME or quantized checkpoint dir) with lm-eval on --tasks.
    Decoding defaults to the model card's settings (a model directory without one: its family's
    documented defaults); the chosen values are printed first."""
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's own bars; progress comes from faircalib's events
    import torch

    from faircalib.devices import resolve_device, resolve_dtype
    from faircalib.eval.harness import evaluate_source, format_table

    device = str(resolve_device(device))  # a bad --device / --dtype fails before anything loads
    resolve_dtype(dtype)
    torch.set_num_threads(max(1, threads))
    torch.set_flush_denormal(True)
    decoding = {k: v for k, v in (("gen_length", gen_length), ("steps", steps), ("block_length", block_length),
                                  ("policy", policy)) if v is not None}
    lim = None if limit is None else (int(limit) if limit >= 1 else limit)
    with ProgressView(quiet=quiet) as view:
        view.note(_decoding_line(source, decoding))
        res = evaluate_source(source, tasks, device=device, dtype=dtype, decoding=decoding, limit=lim,
                              mc_num=mc_num, batch_size=batch_size, gen_batch_size=gen_batch_size, seed=seed,
                              check_greedy=not no_greedy_check, progress=False, report=view)
    click.echo(format_table(res))
    click.echo(f"total {res['wall_s']:.1f}s (load {res['load_s']:.1f}s) on {res['device']}, {res['threads']} thread(s)")
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(res, indent=2, sort_keys=True))
        click.echo(f"wrote {json_out}")


def _decoding_line(source: str, overrides: dict) -> str:
    from faircalib.errors import ModelLoadError
    from faircalib.models import model_decoding

    try:
        d = model_decoding(source)
    except ModelLoadError:
        return f"decoding: {overrides or 'DecodeConfig defaults'}"
    if overrides:
        from faircalib.models.defaults import DecodingDefaults

        d = DecodingDefaults({**d.values, **overrides}, f"{d.origin}; flags: {', '.join(overrides)}", d.unsupported)
    return f"decoding: {d.describe()}"


def register(group: click.Group) -> None:
    group.add_command(eval_cmd)
