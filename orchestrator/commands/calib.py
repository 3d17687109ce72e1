"""`faircalib probe`, `faircalib prior-merge`, `faircalib quantize`: library-level Stage I / Stage II runs
on one machine, without the job service (which runs the same calls sharded over Ray workers).

    faircalib probe zoo:tiny-dream --n 128 --steps 16 --window 16 --out prior/
    faircalib probe zoo:tiny-dream --n 128 --steps 16 --window 16 --shard 0:64 --out part0/   # one shard
    faircalib prior-merge prior/ part0/ part1/
    faircalib quantize zoo:tiny-dream --method faircalib --bits w4a4 --prior prior/ --out ckpt/
"""
from __future__ import annotations

import json

import click


def _probe_options(f):
    opts = [
        click.option("--prompts", default="builtin:tasks:probe", show_default=True, help="Prompt source."),
        click.option("--n", "n_samples", type=int, default=512, show_default=True, help="Probe prompts."),
        click.option("--steps", type=int, default=256, show_default=True, help="Diffusion steps T."),
        click.option("--window", type=int, default=256, show_default=True, help="Answer window L."),
        click.option("--block-length", type=int, default=None, help="Semi-AR block (default: the window)."),
        click.option("--schedule", type=click.Choice(["early", "uniform", "late", "none"]), default="early",
                     show_default=True, help="alpha(t) schedule of the frontier-hit term."),
        click.option("--a-min", type=float, default=1.0, show_default=True),
        click.option("--a-max", type=float, default=4.0, show_default=True),
        click.option("--gamma", type=float, default=2.0, show_default=True),
        click.option("--beta", type=float, default=1.0, show_default=True, help="Reliability weight (0 = off)."),
        click.option("--reliability", type=click.Choice(["prob", "neg_entropy", "margin"]), default="prob",
                     show_default=True),
        click.option("--probe-seed", type=int, default=0, show_default=True),
        click.option("--probe-batch", type=int, default=16, show_default=True,
                     help="Rollouts per batch (part of the prior's cache key)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _probe_config(kw: dict):
    from faircalib.probe import PriorSettings, ProbeConfig

    settings = PriorSettings(schedule=kw["schedule"], a_min=kw["a_min"], a_max=kw["a_max"], gamma=kw["gamma"],
                             beta=kw["beta"], reliability=kw["reliability"])
    return ProbeConfig(prompts=kw["prompts"], n_samples=kw["n_samples"], steps=kw["steps"], window=kw["window"],
                       block_length=kw["block_length"], prior=settings, seed=kw["probe_seed"],
                       batch_size=kw["probe_batch"])


def _load(source: str, threads: int):
    import torch

    from faircalib.models import load_dllm, weights_hash

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    loaded = load_dllm(source)
    return loaded, weights_hash(source)


def _summary(prior) -> dict:
    c = prior.curve
    return {"cache_key": prior.cache_key(), "n_samples": prior.n_samples, "window": prior.window,
            "curve_first": float(c[0]), "curve_last": float(c[-1]), "curve_min": float(c.min()),
            "curve_max": float(c.max())}


@click.command("probe")
@click.argument("source")
@_probe_options
@click.option("--shard", default=None, help="START:STOP of the probe set (START a multiple of --probe-batch).")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Prior directory to write.")
def probe_cmd(source: str, shard: str | None, threads: int, out: str, **kw) -> None:
    """Stage I: probe model SOURCE (directory or zoo:NAME) with random-commit rollouts; save the prior."""
    from faircalib.errors import ConfigError
    from faircalib.probe import probe_prior, probe_shard

    cfg = _probe_config(kw)
    loaded, mhash = _load(source, threads)
    progress = lambda e: click.echo(f"probe {e['done']}/{e['total']}", err=True)
    if shard:
        try:
            start, stop = (int(x) for x in shard.split(":"))
        except ValueError:
            raise ConfigError(f"--shard={shard!r} must be START:STOP (integers)") from None
        prior = probe_shard(loaded.model, loaded.tokenizer, cfg, start, stop, model_hash=mhash, progress=progress)
    else:
        prior = probe_prior(loaded.model, loaded.tokenizer, None, cfg, model_hash=mhash, progress=progress)
    prior.save(out)
    click.echo(json.dumps({"out": out, **_summary(prior)}, indent=2))


@click.command("prior-merge")
@click.argument("out", type=click.Path(file_okay=False))
@click.argument("parts", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
def prior_merge_cmd(out: str, parts: tuple[str, ...]) -> None:
    """Merge prior shards PARTS (directories from `faircalib probe --shard`) into OUT."""
    from faircalib.probe import PositionPrior

    prior = PositionPrior.merge([PositionPrior.load(p) for p in parts])
    prior.save(out)
    click.echo(json.dumps({"out": out, **_summary(prior)}, indent=2))


@click.command("quantize")
@click.argument("source")
@click.option("--method", type=click.Choice(["rtn", "quarot", "flatquant", "qdrop", "faircalib"]),
              default="faircalib", show_default=True)
@click.option("--bits", default="w4a4", show_default=True, help="w4a4, w3a4, w8a8, w4a8, w4a16, w8a16.")
@click.option("--prior", "prior_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="A saved prior (faircalib probe); default: probe now with the probe options.")
@_probe_options
@click.option("--floor", type=float, default=0.1, show_default=True, help="Prior weight outside the window.")
@click.option("--qdrop-weighted", is_flag=True, help="QDrop with the position prior (paper App. E.2).")
@click.option("--calib-source", default="builtin:mix:train", show_default=True)
@click.option("--calib-n", type=int, default=128, show_default=True)
@click.option("--calib-seq-len", type=int, default=1024, show_default=True)
@click.option("--epochs", type=int, default=15, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Quantizer and calibration-sample seed.")
@click.option("--state-dir", default=None, type=click.Path(file_okay=False), help="Per-block state (resume).")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Checkpoint directory to write.")
def quantize_cmd(source: str, method: str, bits: str, prior_dir: str | None, floor: float, qdrop_weighted: bool,
                 calib_source: str, calib_n: int, calib_seq_len: int, epochs: int, seed: int, state_dir: str | None,
                 threads: int, out: str, **kw) -> None:
    """Quantize model SOURCE with one method (Stage I + Stage II for faircalib) and save the checkpoint."""
    from faircalib.checkpoint import save_quantized
    from faircalib.pipeline import MethodConfig, run_method
    from faircalib.probe import PositionPrior
    from faircalib.quant import CalibConfig

    probe = _probe_config(kw)
    prior = PositionPrior.load(prior_dir) if prior_dir else None
    if prior is not None:
        probe = probe.replace(prior=prior.settings)
    cfg = MethodConfig(method=method, bits=bits, probe=probe, floor=floor, qdrop_weighted=qdrop_weighted,
                       calib_source=calib_source, calib_n=calib_n, calib_seq_len=calib_seq_len, calib_seed=seed,
                       calib=CalibConfig(epochs=epochs), seed=seed)
    loaded, _ = _load(source, threads)

    def progress(e: dict) -> None:
        if e.get("event") == "block_done":
            click.echo(f"block {e['block'] + 1}/{e['n_blocks']} loss {e.get('final_loss')}", err=True)

    model, info = run_method(loaded.model, loaded.tokenizer, cfg, prior=prior, state_dir=state_dir,
                             progress=progress, inplace=True)
    save_quantized(model, out, meta={"source": source, "method_config": cfg.to_dict(),
                                     "prior": info.get("prior")}, tokenizer=loaded.tokenizer)
    click.echo(json.dumps({"out": out, "method": method, "bits": bits, "wall_time_s": info["wall_time_s"],
                           "prior_key": (info.get("prior") or {}).get("cache_key"),
                           "block_losses": info.get("block_losses")}, indent=2))


def register(root: click.Group) -> None:
    root.add_command(probe_cmd)
    root.add_command(prior_merge_cmd)
    root.add_command(quantize_cmd)
