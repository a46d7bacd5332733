"""Progress of a run, told to whoever listens: the CLI's progress bar, or nobody.

The flow calls these functions; they do nothing unless a caller (the
CLI) listens with `reporting_to`. The listener lives in a context variable, so it follows the
flow run into Prefect's engine in this process and never crosses to Dask workers.

Progress is counted in tiles and in raster pixels (each tile's core, so a raster's tiles add
up to its width times height whatever the overlap).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from geoseg.tasks.tiling import Tile


@dataclass(frozen=True)
class RunLinks:
    """Where to watch a run: its Prefect flow run and the Dask dashboard, when known.

    ``flow_run_url`` is None when no Prefect UI is known: with the temporary local server
    (``temporary_server``), or an API without a UI URL.
    """

    flow_run_id: str | None
    flow_run_url: str | None
    temporary_server: bool
    dashboard_url: str | None


class ProgressListener(Protocol):
    """What a progress display implements; totals grow as work is planned."""

    def run_started(self, links: RunLinks) -> None:
        """A flow run started its batches."""

    def planned(self, tiles: int, pixels: int) -> None:
        """More tiles (and raster pixels) to do."""

    def done(self, tiles: int, pixels: int) -> None:
        """Tiles (and raster pixels) finished, or found finished by an earlier run."""


class _Tracker:
    """Counts each batch once, whether its future's callback or the flow reports it first."""

    def __init__(self, listener: ProgressListener) -> None:
        self.listener = listener
        self._lock = threading.Lock()
        self._pending: dict[Hashable, tuple[int, int]] = {}

    def follow(self, key: Hashable, tiles: Sequence[Tile], future: Any | None) -> None:
        with self._lock:
            self._pending[key] = (len(tiles), core_pixels(tiles))
        if future is None:
            self.finish(key)
        else:
            future.add_done_callback(lambda _: self.finish(key))

    def finish(self, key: Hashable) -> None:
        # Under the lock: callbacks come from Dask's threads, and listeners need not be safe.
        with self._lock:
            counts = self._pending.pop(key, None)
            if counts is not None:
                self.listener.done(*counts)


_tracker: ContextVar[_Tracker | None] = ContextVar("geoseg_progress", default=None)


@contextmanager
def reporting_to(listener: ProgressListener) -> Iterator[None]:
    """Send the progress of runs made inside this block to ``listener``."""
    token = _tracker.set(_Tracker(listener))
    try:
        yield
    finally:
        _tracker.reset(token)


def core_pixels(tiles: Iterable[Tile]) -> int:
    """Raster pixels the tiles own (their cores): a raster's whole plan adds up to its size."""
    return sum((c1 - c0) * (r1 - r0) for c0, r0, c1, r1 in (tile.core for tile in tiles))


def run_planned(plans: Sequence[Sequence[Tile]]) -> None:
    """A flow run's tiles are planned: announce where to watch it and the totals."""
    tracker = _tracker.get()
    if tracker is None:
        return
    tracker.listener.run_started(run_links())
    tracker.listener.planned(sum(map(len, plans)), sum(map(core_pixels, plans)))


def batch_submitted(key: Hashable, tiles: Sequence[Tile], future: Any | None) -> None:
    """Count ``tiles`` done when ``future`` (a Prefect future) completes; now if it is None.

    ``key`` names the batch (its result file), so `batches_waited` never counts it twice.
    """
    tracker = _tracker.get()
    if tracker is not None:
        tracker.follow(key, tiles, future)


def batches_waited(keys: Iterable[Hashable]) -> None:
    """The flow has the results of these batches: count any whose callback has not run yet."""
    tracker = _tracker.get()
    if tracker is not None:
        for key in keys:
            tracker.finish(key)


def run_links() -> RunLinks:
    """The current flow run's UI URL and its Dask dashboard, as far as they are known."""
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL
    from prefect.utilities.urls import url_for

    from geoseg.flows.temporary_server import is_temporary

    temporary = is_temporary(PREFECT_API_URL.value())
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return RunLinks(None, None, temporary, None)
    run_id = str(context.flow_run.id)
    client = getattr(context.task_runner, "client", None)  # a DaskTaskRunner's
    dashboard = getattr(client, "dashboard_link", None)
    return RunLinks(
        flow_run_id=run_id,
        flow_run_url=None if temporary else url_for("flow-run", obj_id=run_id),
        temporary_server=temporary,
        dashboard_url=dashboard if isinstance(dashboard, str) else None,
    )
