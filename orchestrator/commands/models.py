"""`faircalib models ...` and `faircalib zoo ...`."""
from __future__ import annotations

import json

import click


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
