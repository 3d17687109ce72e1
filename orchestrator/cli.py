"""`faircalib` command line. The root group only wires command modules together; each module under
`commands/` exposes `register(group)`. Errors raised on purpose (FaircalibError) become one-line
messages with exit code 1; anything else is a bug and keeps its traceback."""
from __future__ import annotations

import importlib
import logging

import click

from faircalib.errors import FaircalibError

# Command modules, in help order. Add one line per new module.
COMMAND_MODULES = [
    "faircalib.orchestrator.commands.models",
    "faircalib.orchestrator.commands.quickstart",
    "faircalib.orchestrator.commands.jobs",
    "faircalib.orchestrator.commands.storage",
    "faircalib.orchestrator.commands.eval",
    "faircalib.orchestrator.commands.calib",
]


class _Root(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FaircalibError as e:
            raise click.ClickException(str(e)) from e


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="faircalib")
def main(verbose: int) -> None:
    """FAIR-Calib: quantize diffusion LLMs (LLaDA, Dream) and run calibration jobs."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(main)
