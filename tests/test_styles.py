"""QGIS default styles and GeoPackage metadata in the writer's output (tasks/styles, metadata)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyogrio
import pyproj
import pytest
import shapely

from geoseg.errors import OptionsError
from geoseg.reports.results import read_results
from geoseg.tasks.palette import class_colour, rgb
from geoseg.tasks.styles import FILL_OPACITY, class_style_qml, class_style_sld
from geoseg.tasks.write import GeoPackageWriter, ObjectBatch

CLASSES = ("lawn", "tree crown")
RUN: dict[str, str | int | float | None] = {
    "geoseg_version": "9.9.9",
    "model_name": "greenery",
    "model_sha256": "ab" * 32,
    "sources": "https://example.invalid/a.tif\nb.tif",
    "tile_size": 512,
    "dask_address": None,
}
SE = "{http://www.opengis.net/se}"


@pytest.fixture
def gpkg(tmp_path: Path) -> Path:
    path = tmp_path / "objects.gpkg"
    square = shapely.box(500_000, 4_000_000, 500_010, 4_000_010)
    with GeoPackageWriter(path, pyproj.CRS("EPSG:32636").to_wkt(), CLASSES, False) as out:
        out.add(
            ObjectBatch(
                geometry=np.array([square], dtype=object),
                object_id=np.array(["a.tif:0:0"], dtype=object),
                class_name=np.array(["lawn"], dtype=object),
                score=np.array([0.9]),
                area_m2=np.array([100.0]),
                perimeter_m=np.array([40.0]),
                source=np.array(["a.tif"], dtype=object),
            )
        )
        out.finish(RUN)
    return path


def fill_layer(qml: str) -> dict[str, str]:
    """The ``prop`` and ``Option`` values of the QML's simple fill, checked to agree."""
    layer = ET.fromstring(qml).find("renderer-v2/symbols/symbol/layer")
    assert layer is not None
    assert layer.get("class") == "SimpleFill"
    props = {e.get("k"): e.get("v") for e in layer.findall("prop")}
    options = {e.get("name"): e.get("value") for e in layer.findall("Option/Option")}
    assert props == options
    return {str(k): str(v) for k, v in props.items()}


@pytest.mark.parametrize("name", ["lawn", "building", "solar panel"])
def test_qml_fills_in_the_class_colour_with_an_opaque_outline_and_labels_off(name: str) -> None:
    qml = class_style_qml(name)
    red, green, blue = rgb(class_colour(name))
    props = fill_layer(qml)
    assert props["color"] == f"{red},{green},{blue},{round(FILL_OPACITY * 255)}"
    assert props["outline_color"] == f"{red},{green},{blue},255"
    assert props["style"] == props["outline_style"] == "solid"
    root = ET.fromstring(qml)
    assert root.tag == "qgis"
    assert root.get("labelsEnabled") == "0"
    assert root.find("renderer-v2").get("type") == "singleSymbol"  # type: ignore[union-attr]
    assert '"area_m2"' in root.find("labeling/settings/text-style").get("fieldName")  # type: ignore[union-attr,operator]


def test_sld_has_the_class_colour_fill_and_stroke() -> None:
    root = ET.fromstring(class_style_sld("building"))
    parameters = {e.get("name"): e.text for e in root.iter(f"{SE}SvgParameter")}
    assert parameters["fill"] == parameters["stroke"] == "#c0392b"
    assert float(parameters["fill-opacity"]) == FILL_OPACITY
    assert root.find(f".//{SE}Name").text == "building"  # type: ignore[union-attr]


def test_layer_styles_table_is_the_one_qgis_creates(gpkg: Path) -> None:
    with sqlite3.connect(gpkg) as db:
        columns = [(row[1], row[2]) for row in db.execute("PRAGMA table_info(layer_styles)")]
        contents = db.execute(
            "SELECT data_type, srs_id FROM gpkg_contents WHERE table_name = 'layer_styles'"
        ).fetchall()
        rows = db.execute(
            "SELECT f_table_catalog, f_table_schema, f_table_name, f_geometry_column, styleQML, "
            "useAsDefault, update_time FROM layer_styles ORDER BY id"
        ).fetchall()
    db.close()
    assert columns == [
        ("id", "INTEGER"),
        ("f_table_catalog", "TEXT(256)"),
        ("f_table_schema", "TEXT(256)"),
        ("f_table_name", "TEXT(256)"),
        ("f_geometry_column", "TEXT(256)"),
        ("styleName", "TEXT(30)"),
        ("styleQML", "TEXT"),
        ("styleSLD", "TEXT"),
        ("useAsDefault", "BOOLEAN"),
        ("description", "TEXT"),
        ("owner", "TEXT(30)"),
        ("ui", "TEXT(30)"),
        ("update_time", "DATETIME"),
    ]
    assert contents == [("attributes", 0)]
    assert [row[:4] for row in rows] == [("", "", name, "geom") for name in CLASSES]
    assert [row[5] for row in rows] == [1, 1]
    assert all(row[6].endswith("Z") for row in rows)
    for name, row in zip(CLASSES, rows, strict=True):
        red, green, blue = rgb(class_colour(name))
        assert fill_layer(row[4])["outline_color"] == f"{red},{green},{blue},255"


def test_gdal_reads_styles_and_metadata_without_warnings_or_side_files(gpkg: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = pyogrio.read_info(gpkg, layer="layer_styles")
        lawn = pyogrio.read_info(gpkg, layer="lawn")
        styles = pyogrio.read_dataframe(gpkg, layer="layer_styles")
        results = read_results(gpkg)
    assert info["features"] == 2
    assert info["fields"].tolist()[:2] == ["f_table_catalog", "f_table_schema"]
    assert styles["useAsDefault"].tolist() == [True, True]
    assert "lawn objects found by geoseg" in lawn["layer_metadata"]["DESCRIPTION"]
    assert "<title>geoseg objects</title>" in info["dataset_metadata"]["GPKG_METADATA_ITEM_1"]
    assert results.class_names == CLASSES
    assert sorted(p.name for p in gpkg.parent.iterdir()) == ["objects.gpkg"]


def test_metadata_describes_the_file_and_each_class_layer_as_qgis_does(gpkg: Path) -> None:
    with sqlite3.connect(gpkg) as db:
        rows = db.execute(
            "SELECT m.md_scope, m.md_standard_uri, r.reference_scope, r.table_name, m.metadata "
            "FROM gpkg_metadata m JOIN gpkg_metadata_reference r ON r.md_file_id = m.id "
            "ORDER BY m.id"
        ).fetchall()
        extensions = {row[0] for row in db.execute("SELECT table_name FROM gpkg_extensions")}
    db.close()
    assert [row[:4] for row in rows] == [
        ("dataset", "http://mrcc.com/qgis.dtd", "geopackage", None),
        ("dataset", "http://mrcc.com/qgis.dtd", "table", "lawn"),
        ("dataset", "http://mrcc.com/qgis.dtd", "table", "tree crown"),
    ]
    assert {"gpkg_metadata", "gpkg_metadata_reference"} <= extensions
    whole, lawn = ET.fromstring(rows[0][4]), ET.fromstring(rows[1][4])
    assert "lawn, tree crown" in str(whole.findtext("abstract"))
    assert lawn.findtext("title") == "lawn objects"
    history = [e.text for e in lawn.findall("history")]
    assert history == [
        "geoseg version: 9.9.9",
        "model: greenery",
        f"model sha256: {'ab' * 32}",
        "sources: https://example.invalid/a.tif\nb.tif",
    ]
    assert [e.text for e in whole.findall("history")] == history


@pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="needs GDAL's ogrinfo")
def test_ogrinfo_opens_the_output_cleanly(gpkg: Path) -> None:
    done = subprocess.run(
        ["ogrinfo", "-so", str(gpkg), "layer_styles"], capture_output=True, text=True, check=True
    )
    assert done.stderr == ""
    assert "useAsDefault: Integer(Boolean)" in done.stdout
    assert "update_time: DateTime (0.0) DEFAULT CURRENT_TIMESTAMP" in done.stdout
    assert "Feature Count: 2" in done.stdout
    assert "<title>geoseg objects</title>" in done.stdout


def test_a_class_named_layer_styles_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OptionsError, match=r"'Layer_Styles'.*layer_styles are the output's own"):
        GeoPackageWriter(tmp_path / "o.gpkg", "EPSG:32636", ["Layer_Styles"], False)


QGIS_READS = """
import json, os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from qgis.core import QgsApplication, QgsVectorLayer
app = QgsApplication([], False)
app.initQgis()
seen = {}
for name in sys.argv[2:]:
    layer = QgsVectorLayer(sys.argv[1] + "|layername=" + name, name, "ogr")
    fill = layer.renderer().symbol().symbolLayer(0)
    seen[name] = {
        "valid": layer.isValid(),
        "renderer": layer.renderer().type(),
        "fill": [fill.color().name(), fill.color().alpha()],
        "stroke": [fill.strokeColor().name(), fill.strokeColor().alpha()],
        "labels": layer.labelsEnabled(),
        "label_expression": layer.labeling().settings().fieldName,
        "title": layer.metadata().title(),
        "history": layer.metadata().history(),
    }
print(json.dumps(seen), flush=True)
os._exit(0)  # QGIS's own teardown can crash headless
"""


def test_qgis_opens_each_class_layer_with_its_default_style(gpkg: Path) -> None:
    """Through QGIS itself (Debian's python3-qgis); skipped where it is not installed."""
    python = shutil.which("python3", path="/usr/bin")
    if (
        python is None
        or subprocess.run([python, "-c", "import qgis.core"], capture_output=True).returncode
    ):
        pytest.skip("needs QGIS's Python bindings (apt install python3-qgis)")
    done = subprocess.run(
        [python, "-c", QGIS_READS, str(gpkg), *CLASSES], capture_output=True, text=True, timeout=60
    )
    layers = json.loads(done.stdout.splitlines()[-1])
    for name in CLASSES:
        seen = layers[name]
        colour = class_colour(name)
        assert seen["valid"]
        assert seen["renderer"] == "singleSymbol"
        assert seen["fill"] == [colour, round(FILL_OPACITY * 255)]
        assert seen["stroke"] == [colour, 255]
        assert seen["labels"] is False
        assert '"area_m2"' in seen["label_expression"]
        assert seen["title"] == f"{name} objects"
        assert seen["history"][:2] == ["geoseg version: 9.9.9", "model: greenery"]
