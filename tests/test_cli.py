"""``geoseg run`` through the CLI: the analyst's path, its exit codes and its error lines."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyogrio
import pytest
import torch
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.tasks.cache import cache_folder
from tests.oracle_model import write_oracle_model
from tests.scenes import NODATA, scene_bands

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def oracle(tmp_path: Path) -> Path:
    return write_oracle_model(tmp_path / "oracle.pt")


def invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.mark.e2e
def test_run_writes_a_geopackage_on_a_local_cluster(
    make_raster, oracle: Path, tmp_path: Path
) -> None:
    scene = make_raster(scene_bands(), nodata=NODATA)
    out = tmp_path / "objects.gpkg"
    code, output = invoke(
        "run",
        scene,
        "-o",
        out,
        "--model",
        oracle,
        "--workers",
        "1",
        "--tile-size",
        "256",
        "--overlap",
        "32",
    )
    assert code == 0, output
    assert "Wrote 8 objects" in output
    assert pyogrio.read_info(out, layer="building")["features"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.e2e
def test_bundled_sample_runs_with_the_built_in_model(tmp_path: Path) -> None:
    out = tmp_path / "kampala.gpkg"
    sample = REPO / "samples" / "kampala_buildings.tif"
    code, output = invoke("run", sample, "-o", out, "--workers", "1")
    assert code == 0, output
    assert {name for name, _ in pyogrio.list_layers(out)} >= {"lawn", "bridge", "building"}
    buildings = pyogrio.read_dataframe(out, layer="building")
    assert len(buildings) > 60
    assert buildings.crs.to_epsg() == 3857
    assert buildings.geometry.is_valid.all()
    # roofs cover about 59 % of this dense block (76 m x 76 m; 3,455 m² of labelled buildings)
    assert 0.4 * 5_840 < buildings["area_m2"].sum() < 0.75 * 5_840


def bad_inputs(
    tmp_path: Path, make_raster, oracle: Path
) -> dict[str, tuple[list[str | Path], str]]:
    good = make_raster(scene_bands(), nodata=NODATA)
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    empty = tmp_path / "empty.tif"
    empty.touch()
    no_crs = make_raster(np.zeros((2, 20, 20), dtype=np.uint8), name="nocrs.tif", crs=None)
    one_band = make_raster(np.zeros((20, 20), dtype=np.uint8), name="oneband.tif")
    pickled = tmp_path / "pickled.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)
    existing = tmp_path / "existing.gpkg"
    existing.write_text("keep me")
    out = tmp_path / "out.gpkg"
    model = ["--model", oracle]
    return {
        "missing file": ([tmp_path / "nope.tif", "-o", out, *model], "nope.tif"),
        "not a raster": ([text, "-o", out, *model], "notes.tif"),
        "empty file": ([empty, "-o", out, *model], "empty.tif"),
        "no crs": ([no_crs, "-o", out, *model], "nocrs.tif has no CRS"),
        "too few bands": ([one_band, "-o", out, *model], "oneband.tif has 1 band"),
        "pickled model": ([good, "-o", out, "--model", pickled], "pickled.pt"),
        "model is a raster": ([good, "-o", out, "--model", good], "scene.tif"),
        "output exists": ([good, "-o", existing, *model], "--overwrite"),
        "no output folder": ([good, "-o", tmp_path / "missing" / "o.gpkg", *model], "missing"),
        "overlap >= tile": (
            [good, "-o", out, *model, "--tile-size", "64", "--overlap", "64"],
            "overlap 64",
        ),
        "tile size 0": ([good, "-o", out, *model, "--tile-size", "0"], "tile size 0"),
        "negative threshold": (
            [good, "-o", out, *model, "--score-threshold", "-1"],
            "--score-threshold",
        ),
        "negative area": ([good, "-o", out, *model, "--min-area-m2", "-5"], "--min-area-m2"),
        "conflicting cluster": (
            [good, "-o", out, *model, "--workers", "2", "--dask-address", "tcp://127.0.0.1:1"],
            "--dask-address",
        ),
    }


CASES = [
    "missing file",
    "not a raster",
    "empty file",
    "no crs",
    "too few bands",
    "pickled model",
    "model is a raster",
    "output exists",
    "no output folder",
    "overlap >= tile",
    "tile size 0",
    "negative threshold",
    "negative area",
    "conflicting cluster",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_line_exit_2_and_no_output(
    case: str, tmp_path: Path, make_raster, oracle: Path
) -> None:
    args, expected = bad_inputs(tmp_path, make_raster, oracle)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, output = invoke("run", *args)
    assert code == 2
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("Error: ")
    assert expected in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if case == "output exists":
        assert (tmp_path / "existing.gpkg").read_text() == "keep me"


def test_console_script_reports_errors_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    script = Path(sys.executable).with_name("geoseg")
    result = subprocess.run(
        [script, "run", tmp_path / "absent.tif", "-o", tmp_path / "o.gpkg"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'absent.tif'} does not exist"
    ]
    assert result.stdout == ""


def test_command_line_options_override_the_run_file(
    tmp_path: Path, make_raster, oracle: Path
) -> None:
    scene = make_raster(scene_bands(), nodata=NODATA)
    existing = tmp_path / "out.gpkg"
    existing.write_text("keep me")
    run_file = tmp_path / "run.toml"
    run_file.write_text(
        f'inputs = ["{scene}"]\noutput = "{existing}"\nmodel = "{oracle}"\ntile_size = 0\n'
    )
    code, output = invoke("run", "--config", run_file)
    assert (code, output.strip()) == (
        2,
        "Error: tile size 0 px is too small; use at least 16 (512 is typical)",
    )
    # with the bad tile size overridden, the run gets as far as the existing output
    code, output = invoke("run", "--config", run_file, "--tile-size", "256")
    assert code == 2
    assert "out.gpkg already exists; pass --overwrite" in output
    code, output = invoke("run", "--config", tmp_path / "absent.toml")
    assert code == 2
    assert "absent.toml: cannot read the run file" in output


@pytest.mark.e2e
def test_sigterm_stops_a_run_with_its_workers_and_server_and_leaves_no_output(
    make_raster, oracle: Path, tmp_path: Path
) -> None:
    scene = make_raster(scene_bands(), nodata=NODATA)
    out = tmp_path / "objects.gpkg"
    command = [Path(sys.executable).with_name("geoseg"), "run", scene, "-o", out, "--model"]
    command += [oracle, "--workers", "1", "--tile-size", "96", "--overlap", "8"]
    command += ["--batch-size", "2"]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if any(cache_folder(out).glob("*/batch-*.npz")):
            break
        time.sleep(0.05)
    tree = psutil.Process(process.pid).children(recursive=True)
    assert any("prefect.server.api.server" in " ".join(p.cmdline()) for p in tree)
    process.send_signal(signal.SIGTERM)  # to the run alone, as `kill` and Kubernetes do
    try:
        assert process.wait(timeout=60) == 128 + signal.SIGTERM, process.stderr.read()
        _, alive = psutil.wait_procs(tree, timeout=30)
    finally:
        for leftover in [process, *tree]:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                leftover.kill()
    assert alive == []
    errors = process.stderr.read()
    assert errors.splitlines() == ["Error: stopped by SIGTERM"]
    assert sorted(p.name for p in tmp_path.iterdir() if "objects" in p.name) == [
        cache_folder(out).name  # finished batches stay for a resume
    ]
