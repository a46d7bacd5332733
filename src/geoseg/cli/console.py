"""What the CLI shows besides errors: progress bars, run links and result lines.

Progress bars and run links go to stderr, and only to a terminal (links also with ``geoseg
--verbose``): off a terminal, a failed run's stderr stays the one line naming the problem.
``geoseg --quiet`` silences everything here, leaving only errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from geoseg import progress

if TYPE_CHECKING:
    from geoseg.models.training import Progress as TrainingProgress


def group_flag(name: str) -> bool:
    """Whether the ``geoseg`` group's flag ``name`` (``quiet``, ``verbose``) was given."""
    context = click.get_current_context(silent=True)
    return bool(context is not None and context.find_root().params.get(name))


def quiet() -> bool:
    """Whether ``geoseg --quiet`` was given."""
    return group_flag("quiet")


def say(message: str) -> None:
    """Print a result line on stdout, unless quiet."""
    if not quiet():
        click.echo(message)


def stderr_console() -> Console:
    """The console progress and links are drawn on: stderr, plain text off a terminal."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


class MegapixelRate(ProgressColumn):
    """Raster megapixels per second since the task started (field ``pixels``)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed
        if not elapsed:
            return Text("-- MP/s", style="progress.data.speed")
        rate = task.fields.get("pixels", 0) / 1e6 / elapsed
        return Text(f"{rate:.2f} MP/s", style="progress.data.speed")


class TileBar:
    """The ``geoseg run`` display: run links at start, then tiles done / total, MP/s and ETA."""

    def __init__(self, console: Console, show_bar: bool, show_links: bool) -> None:
        self.console = console
        self.show_links = show_links
        self.bar = Progress(
            TextColumn("segmenting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tiles"),
            MegapixelRate(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not show_bar,
        )
        self.task = self.bar.add_task("tiles", total=0, pixels=0, start=False)

    def run_started(self, links: progress.RunLinks) -> None:
        if not self.show_links:
            return
        if links.flow_run_url is not None:
            self.console.print(f"Prefect flow run: {links.flow_run_url}")
        elif links.temporary_server:
            self.console.print(
                f"Prefect flow run {links.flow_run_id} on a temporary local server, gone when "
                "the run ends (set PREFECT_API_URL to keep runs and watch them in a UI)"
            )
        elif links.flow_run_id is not None:
            self.console.print(f"Prefect flow run {links.flow_run_id} (no PREFECT_UI_URL known)")
        if links.dashboard_url is not None:
            self.console.print(f"Dask dashboard: {links.dashboard_url}")

    def planned(self, tiles: int, pixels: int) -> None:
        total = self.bar.tasks[self.task].total or 0
        self.bar.update(self.task, total=total + tiles)
        self.bar.start()  # drawn from here on, not while Prefect and Dask start
        self.bar.start_task(self.task)

    def done(self, tiles: int, pixels: int) -> None:
        task = self.bar.tasks[self.task]
        self.bar.update(self.task, advance=tiles, pixels=task.fields["pixels"] + pixels)
        if task.finished:
            self.bar.stop_task(self.task)  # MP/s over the tiles, not stitching and writing


@contextmanager
def run_progress(console: Console | None = None) -> Iterator[TileBar | None]:
    """Show a run's links and tile progress on stderr while the block runs; nothing if quiet.

    On a terminal, links and the bar; off one, the links only with ``--verbose``.
    """
    if quiet():
        yield None
        return
    console = console or stderr_console()
    terminal = console.is_terminal
    display = TileBar(console, show_bar=terminal, show_links=terminal or group_flag("verbose"))
    try:
        with progress.reporting_to(display):
            yield display
    finally:
        display.bar.stop()


@contextmanager
def training_progress(total: int) -> Iterator[Callable[[TrainingProgress], None]]:
    """A bar of training iterations with the loss, for ``train(on_progress=...)``."""
    console = stderr_console()
    bar = Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[losses]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=quiet() or not console.is_terminal,
    )
    task = bar.add_task("training", total=total, losses="")

    def report(step: TrainingProgress) -> None:
        val = step.validation_loss
        losses = (
            f"loss {step.loss:.3f}"
            + (f" val {val:.3f}" if val is not None else "")
            + f" {step.seconds_per_iteration:.2f}s/it"
        )
        bar.update(task, completed=step.iteration, total=step.total, losses=losses)

    with bar:
        yield report


@contextmanager
def count_progress(label: str, total: int) -> Iterator[Callable[[], None]]:
    """A bar of ``total`` steps (images to evaluate...); yields the function to call after each."""
    console = stderr_console()
    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=quiet() or not console.is_terminal,
    )
    task = bar.add_task(label, total=total)
    with bar:
        yield lambda: bar.advance(task)
