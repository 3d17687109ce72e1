"""`faircalib probe`, `faircalib prior-merge`, `faircalib quantize`: library-level Stage I / Stage II runs
on one machine, without the job service (which runs the same calls sharded over Ray workers).

    faircalib probe zoo:tiny-dream --n 128 --out prior/        # T / L: the model card's decoding (16 / 16)
    faircalib probe zoo:tiny-dream --n 128 --shard 0:64 --out part0/   # one shard
    faircalib probe zoo:tiny-dream --paper-scale --out prior/  # 512 prompts, T = L = 256
    faircalib prior-merge prior/ part0/ part1/
    faircalib quantize zoo:tiny-dream --method faircalib --bits w4a4 --prior prior/ --out ckpt/
"""
from __future__ import annotations

import json
from collections.abc import Callable

import click
from faircalib.orchestrator.progress import ProgressView, quiet_option


class LibraryChoice(click.Choice):
    """A Click choice whose values come from the library on first use (importing faircalib's settings
    pulls in torch: not at CLI start-up)."""

    def __init__(self, values: Callable[[], tuple[str, ...]]):
        self._values = values
        super().__init__(())

    @property
    def choices(self):  # noqa: D401 - click reads .choices
        return tuple(self._values())

    @choices.setter
    def choices(self, _value) -> None:
        pass


def _methods() -> tuple[str, ...]:
    from faircalib.quant import quant_methods

    return quant_methods()


def _prior_values(name: str) -> Callable[[], tuple[str, ...]]:
    def values() -> tuple[str, ...]:
        from faircalib.probe import prior

        return getattr(prior, name)
    return values


LIB = "default: the library's, see docs/method.md"
# CLI option -> (section, field) of faircalib.probe.ProbeConfig / PriorSettings; unset options keep the
# library's defaults, so every default has one definition
PROBE_OPTIONS = {"prompts": ("probe", "prompts"), "n_samples": ("probe", "n_samples"), "steps": ("probe", "steps"),
                 "window": ("probe", "window"), "block_length": ("probe", "block_length"),
                 "probe_seed": ("probe", "seed"), "probe_batch": ("probe", "batch_size"),
                 "schedule": ("prior", "schedule"), "a_min": ("prior", "a_min"), "a_max": ("prior", "a_max"),
                 "gamma": ("prior", "gamma"), "beta": ("prior", "beta"), "reliability": ("prior", "reliability")}


def _probe_options(f):
    opts = [
        click.option("--prompts", default=None, help=f"Prompt source ({LIB} §4)."),
        click.option("--n", "n_samples", type=int, default=None, help=f"Probe prompts ({LIB} §4)."),
        click.option("--steps", type=int, default=None,
                     help="Diffusion steps T (default: the model's decoding steps: its card, else its family's)."),
        click.option("--window", type=int, default=None,
                     help="Answer window L (default: the model's decoding gen_length: its card, else its family's)."),
        click.option("--block-length", type=int, default=None,
                     help="Semi-AR block (default: the model's decoding block, else the window)."),
        click.option("--paper-scale", is_flag=True,
                     help="The paper's Stage I scale (docs/method.md §4): 512 prompts, T = L = 256, one block; "
                          "explicit flags still win."),
        click.option("--schedule", type=LibraryChoice(_prior_values("SCHEDULES")), default=None,
                     help=f"alpha(t) schedule of the frontier-hit term ({LIB} §4)."),
        click.option("--a-min", type=float, default=None, help=f"alpha(t) minimum ({LIB} §4)."),
        click.option("--a-max", type=float, default=None, help=f"alpha(t) maximum ({LIB} §4)."),
        click.option("--gamma", type=float, default=None, help=f"alpha(t) exponent ({LIB} §4)."),
        click.option("--beta", type=float, default=None, help=f"Reliability weight, 0 = off ({LIB} §4)."),
        click.option("--reliability", type=LibraryChoice(_prior_values("RELIABILITY")), default=None,
                     help=f"Teacher sharpness signal ({LIB} §4)."),
        click.option("--probe-seed", type=int, default=None, help=f"Probe sample + commit-set seed ({LIB} §4)."),
        click.option("--probe-batch", type=int, default=None,
                     help=f"Rollouts per batch, part of the prior's cache key ({LIB} §4)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _probe_dict(kw: dict) -> dict:
    """The given probe options as a ProbeConfig dict (unset ones: the library's defaults)."""
    out: dict = {}
    for opt, (section, name) in PROBE_OPTIONS.items():
        if kw.get(opt) is not None:
            (out.setdefault("prior", {}) if section == "prior" else out)[name] = kw[opt]
    return out


def _probe_config(kw: dict, source: str):
    """(ProbeConfig, where T / L came from): the given flags, then --paper-scale, then the model's own
    decoding (faircalib.probe.probe_defaults); every other field: the library's default."""
    from faircalib.probe import probe_defaults

    return probe_defaults(source, paper_scale=bool(kw.get("paper_scale")), **_probe_dict(kw))


def _probe_line(cfg, origin: str) -> str:
    block = "one block" if cfg.block_length in (None, cfg.window) else f"block {cfg.block_length}"
    hint = ": --paper-scale" if origin == "paper scale" else "; --paper-scale for T = L = 256"
    return (f"Stage I probe: T={cfg.steps} steps, L={cfg.window} window, {block}, {cfg.n_samples} prompts "
            f"({origin}{hint})")


def _device_option(f):
    return click.option("--device", default="auto", show_default=True,
                        help="auto | cpu | cuda | cuda:N (auto = CUDA when available). Stage II keeps the model "
                             "on the host and streams one block at a time to the device.")(f)


def _dtype_option(f):
    return click.option("--dtype", default="auto", show_default=True,
                        help="Weights' dtype: auto | bfloat16 | float32 | float16 (auto = bfloat16 on CUDA, the "
                             "stored dtype on CPU; float32 on a CPU without bf16 units, at twice the memory).")(f)


def _load(source: str, threads: int, dtype: str = "auto"):
    """The model on the host (Stage II streams one block at a time to the device) in --dtype."""
    import torch

    from faircalib.models import load_dllm, weights_hash

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    loaded = load_dllm(source, dtype=dtype)
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
@_device_option
@_dtype_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Prior directory to write.")
@quiet_option
def probe_cmd(source: str, shard: str | None, threads: int, device: str, dtype: str, out: str, quiet: bool,
              **kw) -> None:
    """Stage I: probe model SOURCE (directory or zoo:NAME) with random-commit rollouts; save the prior.
    T / L default to the model's own decoding settings (zoo model card, or the family's documented
    defaults for a model directory); --paper-scale or --steps / --window choose others."""
    from faircalib.devices import resolve_device, resolve_dtype
    from faircalib.errors import ConfigError
    from faircalib.probe import probe_prior, probe_shard

    device = resolve_device(device)  # a bad --device / --dtype fails before the model loads
    resolve_dtype(dtype)
    cfg, origin = _probe_config(kw, source)
    with ProgressView(quiet=quiet) as view:
        view.note(_probe_line(cfg, origin))
        loaded, mhash = _load(source, threads, dtype)
        if shard:
            try:
                start, stop = (int(x) for x in shard.split(":"))
            except ValueError:
                raise ConfigError(f"--shard={shard!r} must be START:STOP (integers)") from None
            prior = probe_shard(loaded.model, loaded.tokenizer, cfg, start, stop, model_hash=mhash, progress=view,
                                device=device)
        else:
            prior = probe_prior(loaded.model, loaded.tokenizer, None, cfg, model_hash=mhash, progress=view,
                                device=device)
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
@click.option("--method", type=LibraryChoice(_methods), default="faircalib", show_default=True)
@click.option("--bits", default="w4a4", show_default=True, help="A bit setting of faircalib.quant.bits.SETTINGS "
              "(e.g. w4a4, w8a8, w4a16; a wrong one lists them all).")
@click.option("--prior", "prior_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="A saved prior (faircalib probe); default: probe now with the probe options.")
@_probe_options
@click.option("--floor", type=float, default=None, help=f"Prior weight outside the window ({LIB} §6).")
@click.option("--qdrop-weighted", is_flag=True, help="QDrop with the position prior (paper App. E.2).")
@click.option("--calib-source", default=None, help=f"Calibration text source ({LIB} §3).")
@click.option("--calib-n", type=int, default=None, help=f"Calibration sequences ({LIB} §3).")
@click.option("--calib-seq-len", type=int, default=None, help=f"Tokens per calibration sequence ({LIB} §3).")
@click.option("--calib-seed", type=int, default=None, help=f"Calibration sample seed ({LIB} §3).")
@click.option("--epochs", type=int, default=None, help=f"Training epochs per block ({LIB} §3).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Quantizer seed (QuaRot signs, QDrop drops, block training order).")
@click.option("--state-dir", default=None, type=click.Path(file_okay=False), help="Per-block state (resume).")
@click.option("--threads", type=int, default=1, show_default=True)
@_device_option
@_dtype_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Checkpoint directory to write.")
@quiet_option
def quantize_cmd(source: str, method: str, bits: str, prior_dir: str | None, floor: float | None,
                 qdrop_weighted: bool, calib_source: str | None, calib_n: int | None, calib_seq_len: int | None,
                 calib_seed: int | None, epochs: int | None, seed: int, state_dir: str | None, threads: int,
                 device: str, dtype: str, out: str, quiet: bool, **kw) -> None:
    """Quantize model SOURCE with one method (Stage I + Stage II for faircalib) and save the checkpoint.
    Probing (without --prior) uses the model's own decoding T / L unless --paper-scale or flags say
    otherwise; the chosen values are printed first."""
    from faircalib.checkpoint import save_quantized
    from faircalib.devices import resolve_device, resolve_dtype
    from faircalib.pipeline import MethodConfig, run_method
    from faircalib.probe import PositionPrior

    device = resolve_device(device)  # a bad --device / --dtype fails before the model loads
    resolve_dtype(dtype)
    probe, origin = _probe_config(kw, source)
    prior = PositionPrior.load(prior_dir) if prior_dir else None
    if prior is not None:
        probe = probe.replace(prior=prior.settings)
    calib = {k: v for k, v in (("floor", floor), ("data", calib_source), ("n", calib_n), ("seq_len", calib_seq_len),
                               ("data_seed", calib_seed), ("epochs", epochs)) if v is not None}
    cfg = MethodConfig.from_dict({"method": method, "bits": bits, "seed": seed, "qdrop_weighted": qdrop_weighted,
                                  "probe": probe.to_dict(), "calibration": calib})
    c = cfg.calibration
    with ProgressView(quiet=quiet) as view:
        view.note(f"{source}: {cfg.method} {cfg.bits}, calibration {c.n} x {c.seq_len} tokens of {c.data}, "
                  f"{c.epochs} epochs per block")
        if cfg.uses_prior:
            view.note(f"prior from {prior_dir} ({prior.n_samples} prompts, L={prior.window})" if prior is not None
                      else _probe_line(cfg.probe, origin))
        loaded, _ = _load(source, threads, dtype)
        model, info = run_method(loaded.model, loaded.tokenizer, cfg, prior=prior, state_dir=state_dir,
                                 progress=view, inplace=True, device=device)
    save_quantized(model, out, meta={"source": source, "method_config": cfg.to_dict(),
                                     "prior": info.get("prior")}, tokenizer=loaded.tokenizer)
    click.echo(json.dumps({"out": out, "method": method, "bits": cfg.bits, "device": str(device),
                           "dtype": str(loaded.model.dtype).removeprefix("torch."),
                           "wall_time_s": info["wall_time_s"],
                           "prior_key": (info.get("prior") or {}).get("cache_key"),
                           "block_losses": info.get("block_losses")}, indent=2))


def register(root: click.Group) -> None:
    root.add_command(probe_cmd)
    root.add_command(prior_merge_cmd)
    root.add_command(quantize_cmd)
