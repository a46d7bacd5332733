"""The ``geoseg`` command group: logging, quiet orchestration and error reporting live here."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

import click

from geoseg import __version__, stopping
from geoseg.cli.chips import chips_command
from geoseg.cli.compare import compare_command
from geoseg.cli.evaluate import evaluate_command
from geoseg.cli.export import export_command
from geoseg.cli.inspect import inspect_command
from geoseg.cli.quicklook import quicklook_command
from geoseg.cli.run import run_command
from geoseg.cli.summary import summary_command
from geoseg.cli.train import train_command
from geoseg.cli.zones import zones_command
from geoseg.errors import GeosegError, OptionsError
from geoseg.tasks.sources import redact

QUIET_ORCHESTRATION = {
    # The temporary Prefect server needs longer than the default on a cold start.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


class GeosegGroup(click.Group):
    """Turns a ``GeosegError`` into one line on stderr and exit status 2, and a stop by SIGTERM
    or Ctrl-C, after the command has unwound, into one line and exit status 128 + signal."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with stopping.exits_on_signals():
                return super().invoke(ctx)
        except GeosegError as exc:
            if stopping.received is None:
                click.echo(f"Error: {redact(str(exc))}", err=True)
                sys.exit(2)
        except BaseException:
            if stopping.received is None:
                raise
        click.echo(f"Error: stopped by {signal.Signals(stopping.received).name}", err=True)
        sys.exit(128 + stopping.received)


@click.group(cls=GeosegGroup)
@click.version_option(__version__, prog_name="geoseg")
@click.option("-v", "--verbose", is_flag=True, help="Show Prefect and Dask logs.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors: no progress, links.")
def cli(verbose: bool, quiet: bool) -> None:
    """Turn large georeferenced rasters into measured objects in a GeoPackage."""
    if verbose and quiet:
        raise OptionsError("--verbose and --quiet conflict: pass only one")
    for name, value in QUIET_ORCHESTRATION.items():
        os.environ.setdefault(name, value)
    # Environment, not logger levels: Dask and Prefect configure their loggers when imported,
    # in this process and in every worker process it spawns.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "CRITICAL")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "info" if verbose else "critical")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


cli.add_command(run_command)
cli.add_command(summary_command)
cli.add_command(export_command)
cli.add_command(inspect_command)
cli.add_command(train_command)
cli.add_command(chips_command)
cli.add_command(evaluate_command)
cli.add_command(quicklook_command)
cli.add_command(zones_command)
cli.add_command(compare_command)
