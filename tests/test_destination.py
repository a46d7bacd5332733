"""Outputs: local paths or s3:// URIs, and where each run's batch cache lives."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.config import RunConfig, read_run_file
from geoseg.errors import OptionsError
from geoseg.tasks.destination import cache_anchor, default_cache_dir, output_location


def test_s3_outputs_stay_uris_and_local_ones_become_paths() -> None:
    assert output_location("s3://bucket/runs/objects.gpkg") == "s3://bucket/runs/objects.gpkg"
    assert output_location("runs/objects.gpkg") == Path("runs/objects.gpkg")
    config = RunConfig(inputs=("a.tif",), output="s3://bucket/o.gpkg")
    assert config.output == "s3://bucket/o.gpkg"


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("s3://bucket", "give s3://BUCKET/KEY.gpkg"),
        ("s3:///key.gpkg", "give s3://BUCKET/KEY.gpkg"),
        ("s3://bucket/folder/", "give s3://BUCKET/KEY.gpkg"),
        ("https://me:pw@host/o.gpkg", "outputs go to a local path or s3://BUCKET/KEY.gpkg"),
    ],
)
def test_unusable_output_uris_are_refused_by_name(output: str, message: str) -> None:
    with pytest.raises(OptionsError, match=message) as error:
        RunConfig(inputs=("a.tif",), output=output)
    assert "pw" not in str(error.value)


def test_a_run_file_keeps_an_s3_output_and_takes_a_cache_dir(tmp_path: Path) -> None:
    run_file = tmp_path / "run.toml"
    run_file.write_text(
        'inputs = ["a.tif"]\noutput = "s3://bucket/o.gpkg"\ncache_dir = "cache"\nfail_fast = true\n'
    )
    config = RunConfig(**read_run_file(run_file))  # type: ignore[arg-type]
    assert (config.output, config.cache_dir, config.fail_fast) == (
        "s3://bucket/o.gpkg",
        Path("cache"),
        True,
    )


def test_the_cache_sits_beside_a_local_output_unless_moved(tmp_path: Path) -> None:
    output = tmp_path / "objects.gpkg"
    assert cache_anchor(output, None) == output
    moved = cache_anchor(output, tmp_path / "cache")
    assert moved.parent.parent == tmp_path / "cache"
    assert moved.name == "objects.gpkg"
    other = cache_anchor(tmp_path / "elsewhere" / "objects.gpkg", tmp_path / "cache")
    assert other.parent != moved.parent  # same name, other output: another folder


def test_s3_outputs_are_staged_in_the_user_cache_keyed_by_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "geoseg"
    first = cache_anchor("s3://bucket/a/objects.gpkg", None)
    second = cache_anchor("s3://bucket/b/objects.gpkg", None)
    assert first.parent.parent == tmp_path / "geoseg"
    assert first.name == second.name == "objects.gpkg"
    assert first.parent != second.parent
    assert first == cache_anchor("s3://bucket/a/objects.gpkg", None)
