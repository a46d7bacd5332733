from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from geoseg.errors import RasterError
from geoseg.tasks.sources import expand_inputs, is_remote, redact


@pytest.fixture
def rasters(make_raster) -> list[Path]:
    return [make_raster(np.zeros((1, 8, 8), dtype=np.uint8), name=f"{n}.tif") for n in "bac"]


def stac_item(item_id: str, href: str) -> dict[str, object]:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "geometry": None,
        "properties": {"datetime": "2026-01-01T00:00:00Z"},
        "links": [],
        "assets": {"visual": {"href": href}, "thumbnail": {"href": "thumb.png"}},
    }


def test_folder_glob_and_list_file_expand_in_order_without_duplicates(
    rasters: list[Path], tmp_path: Path
) -> None:
    folder = tmp_path
    (folder / "notes.txt").write_text(f"# scenes\n{rasters[2].name}\n\n{rasters[0]}\n")
    assert expand_inputs([str(folder)]) == tuple(str(folder / f"{n}.tif") for n in "abc")
    assert expand_inputs([str(folder / "[ab].tif")]) == (str(rasters[1]), str(rasters[0]))
    listed = expand_inputs([str(folder / "notes.txt"), str(rasters[0])])
    assert listed == (str(rasters[2]), str(rasters[0]))


def test_remote_inputs_pass_through() -> None:
    uris = ["s3://bucket/a.tif", "https://example.org/b.tif", "/vsicurl/https://x/c.tif"]
    assert expand_inputs(uris) == tuple(uris)
    assert all(is_remote(uri) for uri in uris)


def test_stac_item_and_collection_give_asset_hrefs(rasters: list[Path], tmp_path: Path) -> None:
    item = tmp_path / "item.json"
    item.write_text(json.dumps(stac_item("one", "a.tif")))
    assert expand_inputs([str(item)]) == (str(tmp_path / "a.tif"),)
    collection = tmp_path / "items.json"
    features = [stac_item("one", "a.tif"), stac_item("two", "s3://bucket/two.tif")]
    collection.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    assert expand_inputs([str(collection)]) == (str(tmp_path / "a.tif"), "s3://bucket/two.tif")
    with pytest.raises(RasterError, match=r"has no asset 'analytic' .* pass --asset"):
        expand_inputs([str(item)], stac_asset="analytic")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty", None, "folder holds no rasters"),
        ("*.jp2", None, "no file matches this pattern"),
        ("bad.json", "{not json", "not valid JSON"),
        ("other.json", '{"type": "Topology"}', "not a STAC Item or ItemCollection"),
    ],
)
def test_inputs_naming_nothing_are_refused(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    target = tmp_path / name
    if name == "empty":
        target.mkdir()
    elif content is not None:
        target.write_text(content)
    with pytest.raises(RasterError, match=message):
        expand_inputs([str(target)])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://me:pw@host/x.tif", "https://***@host/x.tif"),
        ("s3://AKIA:secret@bucket/x.tif", "s3://***@bucket/x.tif"),
        (
            "https://h/x.tif?X-Amz-Credential=a%2Fb&X-Amz-Signature=f00&v=2",
            "https://h/x.tif?X-Amz-Credential=***&X-Amz-Signature=***&v=2",
        ),
        ("https://h/x.tif?sig=abc&api_key=k", "https://h/x.tif?sig=***&api_key=***"),
        ("/data/scene.tif", "/data/scene.tif"),
        ("s3://bucket/key.tif", "s3://bucket/key.tif"),
    ],
)
def test_redact_hides_credentials_in_urls(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_credentials_in_an_input_url_never_reach_the_error_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from geoseg.cli.main import cli

    url = "https://analyst:s3cret@127.0.0.1:9/scene.tif?token=t0k3n"
    result = CliRunner().invoke(cli, ["run", url, "-o", str(tmp_path / "o.gpkg")])
    assert result.exit_code == 2
    assert "scene.tif" in result.output
    assert "s3cret" not in result.output
    assert "t0k3n" not in result.output
