"""`faircalib models ...` and `faircalib zoo ...`."""
from __future__ import annotations

import json

import click
from faircalib.orchestrator.progress import ProgressView, quiet_option


@click.group("models")
def models_group() -> None:
    """Inspect model directories and zoo models."""


@models_group.command("inspect")
@click.argument("source")
def inspect_cmd(source: str) -> None:
    """Print architecture, layers, parameters and dtype of SOURCE (a directory or zoo:NAME) as JSON."""
    from faircalib.models import inspect_model

    click.echo(json.dumps(inspect_model(source), indent=2))


@click.group("zoo")
def zoo_group() -> None:
    """The project's own tiny dLLMs (zoo:NAME)."""


@zoo_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def zoo_list(as_json: bool) -> None:
    """List zoo models with their parameter counts and held-out accuracy."""
    from faircalib.models import model_card, zoo_names

    rows = []
    for name in zoo_names():
        card = model_card(name)
        rows.append({"name": f"zoo:{name}", "architecture": card.get("architecture"),
                     "parameters": card.get("parameters"),
                     "heldout_exact_match": card.get("heldout_exact_match", {}).get("mean")})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo("no zoo models installed")
    else:
        for r in rows:
            em = r["heldout_exact_match"]
            click.echo(f"{r['name']:<20} {r['architecture'] or '?':<6} {r['parameters'] or 0:>10,d} params  "
                       f"heldout EM {'?' if em is None else f'{em:.1%}'}")


@zoo_group.command("train")
@click.argument("name")
@click.option("--minutes", type=float, default=None, help="Wall budget; converted to a step count after the "
              "first steps (the count is recorded). Default: the recipe's.")
@click.option("--steps", type=int, default=None, help="Exact number of optimiser steps (reproducible re-run).")
@click.option("--seed", type=int, default=None, help="Seed of init, data order and masks (default: recipe's, 0).")
@click.option("--threads", type=int, default=None, help="torch threads (default 1; the machine is shared).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output directory (default: the zoo directory faircalib/zoo/NAME).")
@click.option("--init-from", type=click.Path(exists=True, file_okay=False), default=None,
              help="Continue training a model written by `zoo train` (same NAME): its weights, a fresh "
                   "optimiser and LR schedule; the card records every stage.")
@click.option("--card/--no-card", default=True, show_default=True,
              help="Evaluate on held-out data and write model_card.json after training.")
@quiet_option
def zoo_train(name: str, minutes: float | None, steps: int | None, seed: int | None, threads: int | None,
              out: str | None, init_from: str | None, card: bool, quiet: bool) -> None:
    """Train zoo model NAME (tiny-llada, tiny-dream) with the masked-diffusion objective (from scratch, or
    continuing a previous run with --init-from)."""
    import sys

    from faircalib.models.zoo import ZOO_DIR
    from faircalib.training.card import write_model_card
    from faircalib.training.recipes import get_recipe, train_zoo_model

    recipe = get_recipe(name)
    dest = out or str(ZOO_DIR / recipe.name)
    command = "faircalib " + " ".join(sys.argv[1:]) if sys.argv else ""
    with ProgressView(quiet=quiet) as view:
        path, _ = train_zoo_model(recipe.name, dest, seed=seed, minutes=minutes, steps=steps, threads=threads,
                                  command=command, log=view.note, init_from=init_from, progress=view)
        if card:
            write_model_card(path, threads=threads or 1, log=view.note)
    click.echo(str(path))


@zoo_group.command("card")
@click.argument("source")
@click.option("--n-per-family", type=int, default=100, show_default=True,
              help="Held-out task examples per family for exact match.")
@click.option("--threads", type=int, default=1, show_default=True)
@quiet_option
def zoo_card(source: str, n_per_family: int, threads: int, quiet: bool) -> None:
    """(Re)evaluate a trained zoo model (zoo:NAME or a directory from `zoo train --out`) and write its
    model_card.json: held-out masked-token NLL and per-family exact match under its default decoding."""
    from faircalib.models import resolve_source
    from faircalib.training.card import write_model_card

    with ProgressView(quiet=quiet) as view:
        card = write_model_card(resolve_source(source), n_per_family=n_per_family, threads=threads, log=view.note)
    click.echo(json.dumps({"heldout_masked_nll": card["heldout_masked_nll"]["nll"],
                           "heldout_exact_match": card["heldout_exact_match"]["per_family"],
                           "mean": card["heldout_exact_match"]["mean"]}, indent=2))


def register(root: click.Group) -> None:
    root.add_command(models_group)
    root.add_command(zoo_group)


@models_group.command("init-tiny")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--arch", type=click.Choice(["llada", "dream"]), default="llada", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def init_tiny(dest: str, arch: str, seed: int) -> None:
    """Write a tiny randomly initialised model to DEST in the official layout (for smoke tests)."""
    from faircalib.models import save_model_dir, tiny_model

    save_model_dir(tiny_model(arch, seed=seed), dest)
    click.echo(dest)


@models_group.command("synth")
@click.option("--like", type=click.Choice(["llada-8b", "dream-7b"]), required=True,
              help="Official model whose config, tensor names, special tokens and vocabulary to copy.")
@click.option("--layers", type=int, required=True, help="Decoder layers (the official models have 32 / 28).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory to write.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--shard-gb", type=float, default=2.0, show_default=True, help="Maximum shard size (GiB).")
def synth_cmd(like: str, layers: int, out: str, seed: int, shard_gb: float) -> None:
    """Write a random-weight checkpoint with the real shapes of LIKE (bf16 sharded safetensors + index +
    tokenizer of the real vocabulary size); loads like the official directory. Outputs are meaningless."""
    from faircalib.errors import ConfigError
    from faircalib.models import inspect_model, write_synthetic

    if not shard_gb > 0:
        raise ConfigError(f"--shard-gb {shard_gb} must be > 0")
    path = write_synthetic(like, layers, out, seed=seed, max_shard_bytes=int(shard_gb * 2 ** 30))
    info = inspect_model(path)
    click.echo(json.dumps({"out": str(path), "like": like, **{k: info[k] for k in (
        "layers", "d_model", "d_ff", "n_heads", "n_kv_heads", "vocab_size", "mask_token_id", "parameters",
        "dtype", "weight_bytes", "shards")}}, indent=2))
