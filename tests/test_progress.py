"""Progress of real flow runs: the hook's totals, the terminal bar, the CLI's links, --quiet."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyogrio
import pytest
from click.testing import CliRunner
from prefect.settings import PREFECT_API_URL, temporary_settings
from rich.console import Console

from geoseg import progress, run
from geoseg.cli.console import run_progress
from geoseg.cli.main import cli
from geoseg.tasks.tiling import plan_tiles
from tests.oracle_model import write_oracle_model
from tests.prefect_server import running_server
from tests.scenes import HEIGHT, NODATA, WIDTH, scene_bands

pytestmark = pytest.mark.e2e

TILING = {"tile_size": 96, "overlap_px": 8, "batch_size": 3}
CLI_TILING = ["--tile-size", "96", "--overlap", "8", "--batch-size", "3"]
TILES = len(plan_tiles(WIDTH, HEIGHT, 96, 8))


@dataclass
class Recorder:
    """A listener that keeps every call, in order."""

    links: list[progress.RunLinks] = field(default_factory=list)
    planned_calls: list[tuple[int, int]] = field(default_factory=list)
    done_calls: list[tuple[int, int]] = field(default_factory=list)

    def run_started(self, links: progress.RunLinks) -> None:
        self.links.append(links)

    def planned(self, tiles: int, pixels: int) -> None:
        self.planned_calls.append((tiles, pixels))

    def done(self, tiles: int, pixels: int) -> None:
        self.done_calls.append((tiles, pixels))


@pytest.fixture
def scene(make_raster) -> Path:
    return make_raster(scene_bands(), nodata=NODATA)


@pytest.fixture
def oracle(tmp_path: Path) -> Path:
    return write_oracle_model(tmp_path / "oracle.pt")


def flow_run_id(output: Path) -> str:
    frame = pyogrio.read_dataframe(output, layer="run")
    return str(frame["flow_run_id"][0])


def test_hook_gets_the_totals_and_every_batch_once(
    scene: Path, oracle: Path, tmp_path: Path, dask_address: str
) -> None:
    out = tmp_path / "objects.gpkg"
    first = Recorder()
    with progress.reporting_to(first):
        result = run(
            [scene], out, model=oracle, dask_address=dask_address, keep_cache=True, **TILING
        )
    (links,) = first.links
    assert links.flow_run_id == flow_run_id(out)
    assert links.temporary_server  # no PREFECT_API_URL in the tests' environment
    assert links.flow_run_url is None
    assert links.dashboard_url is not None
    assert links.dashboard_url.startswith("http://")
    assert first.planned_calls == [(TILES, WIDTH * HEIGHT)]
    assert len(first.done_calls) == result.batches == -(-TILES // 3)
    assert all(1 <= tiles <= 3 for tiles, _ in first.done_calls)
    assert tuple(map(sum, zip(*first.done_calls, strict=True))) == (TILES, WIDTH * HEIGHT)

    # Resumed from the kept batches: all reported done at once, still each once.
    again = Recorder()
    with progress.reporting_to(again):
        resumed = run(
            [scene], out, model=oracle, dask_address=dask_address, overwrite=True, **TILING
        )
    assert resumed.batches_reused == resumed.batches
    assert again.planned_calls == first.planned_calls
    assert sorted(again.done_calls) == sorted(first.done_calls)


def test_nothing_listens_outside_reporting_to(
    scene: Path, oracle: Path, tmp_path: Path, dask_address: str
) -> None:
    outer = Recorder()
    with progress.reporting_to(outer):
        pass
    run([scene], tmp_path / "objects.gpkg", model=oracle, dask_address=dask_address, **TILING)
    assert outer == Recorder()


def test_bar_shows_tiles_and_rate_on_a_terminal(
    scene: Path, oracle: Path, tmp_path: Path, dask_address: str
) -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=150, color_system=None)
    with run_progress(console) as display:
        run([scene], tmp_path / "objects.gpkg", model=oracle, dask_address=dask_address, **TILING)
    assert display is not None
    drawn = screen.getvalue()
    assert f"{TILES}/{TILES} tiles" in drawn
    assert re.search(rf"{TILES}/{TILES} tiles \d+\.\d\d MP/s", drawn), drawn[-600:]
    assert "Dask dashboard: http://" in drawn
    assert "temporary local server" in drawn


def run_args(scene: Path, oracle: Path, out: Path, dask_address: str) -> list[str]:
    args = [str(scene), "-o", str(out), "--model", str(oracle), "--dask-address", dask_address]
    return ["run", *args, *CLI_TILING]


def test_cli_off_a_terminal_prints_no_bar_and_links_only_when_verbose(
    scene: Path, oracle: Path, tmp_path: Path, dask_address: str
) -> None:
    out = tmp_path / "objects.gpkg"
    plain = CliRunner().invoke(cli, run_args(scene, oracle, out, dask_address))
    assert plain.exit_code == 0, plain.output
    assert "Wrote" in plain.stdout
    assert plain.stderr == ""  # a failure would print its one error line alone

    verbose = CliRunner().invoke(
        cli, ["--verbose", *run_args(scene, oracle, out, dask_address), "--overwrite"]
    )
    assert verbose.exit_code == 0, verbose.output
    assert re.search(r"Prefect flow run \S+ on a temporary local server", verbose.stderr)
    assert flow_run_id(out) in verbose.stderr
    assert re.search(r"^Dask dashboard: http://\S+/status$", verbose.stderr, re.MULTILINE)
    assert "tiles" not in verbose.stderr
    assert "━" not in verbose.stderr


def test_cli_quiet_prints_nothing_on_success(
    scene: Path, oracle: Path, tmp_path: Path, dask_address: str
) -> None:
    out = tmp_path / "objects.gpkg"
    result = CliRunner().invoke(cli, ["--quiet", *run_args(scene, oracle, out, dask_address)])
    assert result.exit_code == 0, result.output
    assert out.exists()
    assert result.stdout == ""
    assert result.stderr == ""


def test_cli_quiet_still_reports_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["-q", "run", str(tmp_path / "missing.tif"), "-o", "x.gpkg"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")


def test_verbose_and_quiet_conflict() -> None:
    result = CliRunner().invoke(cli, ["-v", "-q", "run"])
    assert result.exit_code == 2
    assert "--verbose and --quiet conflict" in result.stderr


def test_cli_with_a_prefect_server_prints_the_flow_run_url(
    scene: Path, oracle: Path, tmp_path: Path, dask_address: str
) -> None:
    out = tmp_path / "objects.gpkg"
    with (
        running_server(tmp_path) as server,
        temporary_settings(updates={PREFECT_API_URL: server.api_url}),
    ):
        result = CliRunner().invoke(
            cli,
            ["--verbose", *run_args(scene, oracle, out, dask_address)],
            env={"PREFECT_API_URL": server.api_url},
        )
    assert result.exit_code == 0, result.output
    base = server.api_url.removesuffix("/api")
    assert f"Prefect flow run: {base}/runs/flow-run/{flow_run_id(out)}" in result.stderr
    assert "Dask dashboard: http://" in result.stderr


def test_train_quiet_prints_nothing(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    args = ["--synthetic", "4", "--iterations", "2", "--batch-size", "2", "--tile-size", "64"]
    result = CliRunner().invoke(cli, ["--quiet", "train", str(model), *args, "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert model.exists()
    assert result.stdout == ""
    assert result.stderr == ""
