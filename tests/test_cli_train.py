"""``geoseg train``, ``geoseg chips`` and ``geoseg evaluate`` through the CLI runner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.cli.train import _freeze_batchnorm
from geoseg.models.contract import read_model_spec
from geoseg.models.training import TrainingConfig, load_checkpoint, save_weights
from geoseg.models.unet import UNet


@pytest.fixture
def labelled_raster(make_raster, tmp_path: Path) -> tuple[Path, Path]:
    image = np.full((3, 64, 64), 110, np.uint8)
    image[:, 8:24, 8:24] = 200
    image[:, 40:56, 30:50] = 200
    raster = make_raster(image, transform=Affine(0.5, 0, 500_000, 0, -0.5, 40_000))
    features = [
        {
            "type": "Feature",
            "properties": {"kind": "building"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
            },
        }
        for x0, y0, x1, y1 in [
            (500_004, 39_996, 500_012, 39_988),
            (500_015, 39_980, 500_025, 39_972),
        ]
    ]
    labels = tmp_path / "labels.geojson"
    labels.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": features,
                "crs": {"type": "name", "properties": {"name": "EPSG:32636"}},
            }
        )
    )
    return raster, labels


def test_train_chips_evaluate(labelled_raster: tuple[Path, Path], tmp_path: Path) -> None:
    raster, labels = labelled_raster
    runner = CliRunner()
    chips = runner.invoke(
        cli,
        [
            "chips",
            str(raster),
            str(labels),
            str(tmp_path / "coco"),
            "--size",
            "32",
            "--class-column",
            "kind",
        ],
    )
    assert chips.exit_code == 0, chips.output
    assert "4 chips" in chips.output
    model = tmp_path / "model.pt"
    trained = runner.invoke(
        cli,
        [
            "train",
            str(model),
            "--coco",
            str(tmp_path / "coco" / "annotations.json"),
            "--iterations",
            "2",
            "--batch-size",
            "2",
            "--tile-size",
            "32",
            "--threads",
            "1",
            "--loader-workers",
            "1",
            "--precision",
            "fp32",
            "--val-fraction",
            "0.25",
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert "chosen on the validation images" in trained.output
    assert "--classes leaves classes out" in trained.stderr
    spec = read_model_spec(model)
    assert spec.classes == {1: "lawn", 2: "bridge", 3: "building"}
    assert (spec.tile_size, spec.overlap, spec.bands) == (512, 64, (1, 2, 3))
    assert (tmp_path / "model.ckpt").is_file()
    report = tmp_path / "report.json"
    evaluated = runner.invoke(
        cli,
        [
            "evaluate",
            "--model",
            str(model),
            "--raster",
            str(raster),
            "--labels",
            str(labels),
            "--class-column",
            "kind",
            "--json",
            str(report),
            "--threads",
            "1",
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert "building" in evaluated.output
    figures = json.loads(report.read_text())["classes"]["building"]
    assert figures["true_positives"] + figures["false_negatives"] == 2
    assert sum(figures["missed"].values()) == figures["false_negatives"]


def test_fine_tuning_starts_from_the_shipped_weights(
    labelled_raster: tuple[Path, Path], tmp_path: Path
) -> None:
    raster, labels = labelled_raster
    model = tmp_path / "tuned.pt"
    args = ["train", str(model), "--raster", str(raster), "--labels", str(labels)]
    args += ["--class-column", "kind", "--init", "default", "--iterations", "1"]
    args += ["--batch-size", "1", "--tile-size", "32", "--threads", "1", "--val-fraction", "0.25"]

    trained = CliRunner().invoke(cli, args)

    assert trained.exit_code == 0, trained.output
    assert read_model_spec(model).classes == {1: "lawn", 2: "bridge", 3: "building"}
    # Buildings alone: the run says that the shipped model's lawns and bridges will be forgotten.
    assert trained.stderr.count("Warning: nothing in this run labels lawn, bridge") == 1
    assert "a fine-tuned model forgets them" in trained.stderr
    # Fine-tuning freezes the batch norms by default and scores the start on the same images.
    assert load_checkpoint(model.with_suffix(".ckpt"))["config"]["freeze_batchnorm"] is True
    assert re.search(
        r"Validation F1 at IoU 0.5: \d\.\d{3} \(the --init weights, each with its best "
        r"decoding: \d\.\d{3}\)",
        trained.output,
    )
    files = sorted(path.name for path in tmp_path.iterdir())  # the start's model file is gone
    assert files == ["labels.geojson", "scene.tif", "tuned.ckpt", "tuned.pt"]


def test_a_resumed_run_keeps_its_batchnorm_choice(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.ckpt"
    config = TrainingConfig(classes={1: "building"}, widths=(8, 16), freeze_batchnorm=True)
    save_weights(checkpoint, UNet(3, 1, (8, 16)), config)

    assert _freeze_batchnorm(None, None, checkpoint, resume=True) is True
    assert _freeze_batchnorm(None, None, checkpoint, resume=False) is False
    assert _freeze_batchnorm(None, Path("init.ckpt"), checkpoint, resume=False) is True
    assert _freeze_batchnorm(False, Path("init.ckpt"), checkpoint, resume=False) is False


def test_conflicting_sources_are_one_line_errors(
    labelled_raster: tuple[Path, Path], tmp_path: Path
) -> None:
    raster, labels = labelled_raster
    result = CliRunner().invoke(
        cli,
        [
            "train",
            str(tmp_path / "m.pt"),
            "--coco",
            "a.json",
            "--raster",
            str(raster),
            "--labels",
            str(labels),
        ],
    )
    assert result.exit_code == 2
    assert "--coco conflicts with --raster" in result.output
    nothing = CliRunner().invoke(cli, ["train", str(tmp_path / "m.pt")])
    assert nothing.exit_code == 2
    assert "nothing to train on" in nothing.output


def test_absent_classes_are_taught_from_the_labelled_imagery(
    labelled_raster: tuple[Path, Path], tmp_path: Path
) -> None:
    raster, labels = labelled_raster
    args = ["train", str(tmp_path / "m.pt"), "--raster", str(raster), "--labels", str(labels)]
    args += ["--class-column", "kind", "--absent", "bridge", "--iterations", "1"]
    args += ["--batch-size", "1", "--tile-size", "32", "--threads", "1", "--val-fraction", "0.25"]

    trained = CliRunner().invoke(cli, args)

    assert trained.exit_code == 0, trained.output
    assert "Warning: nothing in this run labels lawn, so" in trained.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--absent", "tree"], "--absent tree: not a class of the model (lawn, bridge, building)"),
        (["--absent", "building"], "--absent building: the labels hold 2 objects of that class"),
    ],
)
def test_absent_classes_are_checked_against_the_labels(
    labelled_raster: tuple[Path, Path], tmp_path: Path, extra: list[str], message: str
) -> None:
    raster, labels = labelled_raster
    args = ["train", str(tmp_path / "m.pt"), "--raster", str(raster), "--labels", str(labels)]
    result = CliRunner().invoke(cli, [*args, "--class-column", "kind", *extra])

    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "m.pt").exists()


def test_absent_needs_labelled_imagery(tmp_path: Path) -> None:
    args = ["train", str(tmp_path / "m.pt"), "--synthetic", "2", "--absent", "bridge"]
    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 2
    assert "--absent needs labelled imagery" in result.output
