"""Default QGIS styles for the class layers, stored in the GeoPackage the way QGIS stores them.

QGIS keeps styles saved "in the database" in a ``layer_styles`` attribute table and applies the
row marked ``useAsDefault`` when a layer is opened. This module builds that table with the exact
columns and SQL types QGIS creates through GDAL (``QgsOgrProviderMetadata::saveStyle``), one
default row per class layer: a semi-transparent fill in the class colour of
:mod:`geoseg.tasks.palette`, a solid outline in the same colour, and labels (the object's area)
configured but switched off. The QML and SLD builders are pure; :func:`add_layer_styles` is the
only function that touches a file.
"""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from geoseg.tasks.palette import class_colour, rgb

__all__ = [
    "FILL_OPACITY",
    "LABEL_EXPRESSION",
    "LAYER_STYLES_SQL",
    "OUTLINE_WIDTH_MM",
    "STYLE_NAME",
    "add_layer_styles",
    "class_style_qml",
    "class_style_sld",
]

FILL_OPACITY = 0.4
"""Opacity of the fill (0 transparent, 1 opaque): the imagery stays visible under the objects."""

OUTLINE_WIDTH_MM = 0.4
"""Outline width on screen, millimetres."""

LABEL_EXPRESSION = "format_number(\"area_m2\", 0) || ' m²'"
"""The QGIS expression of the (disabled) labels: the object's ground area."""

STYLE_NAME = "geoseg"
"""``styleName`` of every row geoseg writes."""

LAYER_STYLES_SQL = (
    'CREATE TABLE "layer_styles" ('
    ' "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,'
    ' "f_table_catalog" TEXT(256), "f_table_schema" TEXT(256), "f_table_name" TEXT(256),'
    ' "f_geometry_column" TEXT(256), "styleName" TEXT(30), "styleQML" TEXT, "styleSLD" TEXT,'
    ' "useAsDefault" BOOLEAN, "description" TEXT, "owner" TEXT(30), "ui" TEXT(30),'
    " \"update_time\" DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"
)
"""The table QGIS creates (via GDAL's GPKG driver) the first time a style is saved in a
GeoPackage: strings of width 256/30, a boolean ``useAsDefault``, ``update_time`` defaulting to
the current time."""

_QML_DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
_SLD = "http://www.opengis.net/sld"
_SE = "http://www.opengis.net/se"
_OGC = "http://www.opengis.net/ogc"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_TRIGGER = (
    'CREATE TRIGGER "trigger_{action}_feature_count_layer_styles" AFTER {event} ON "layer_styles"'
    " BEGIN UPDATE gpkg_ogr_contents SET feature_count = feature_count {sign} 1"
    " WHERE lower(table_name) = lower('layer_styles'); END"
)


def _qgis_colour(colour: str, alpha: float) -> str:
    """``r,g,b,a`` with 0-255 components, as QGIS writes colours."""
    red, green, blue = rgb(colour)
    return f"{red},{green},{blue},{round(alpha * 255)}"


def _fill_properties(class_name: str) -> dict[str, str]:
    colour = class_colour(class_name)
    return {
        "border_width_map_unit_scale": "3x:0,0,0,0,0,0",
        "color": _qgis_colour(colour, FILL_OPACITY),
        "joinstyle": "bevel",
        "offset": "0,0",
        "offset_map_unit_scale": "3x:0,0,0,0,0,0",
        "offset_unit": "MM",
        "outline_color": _qgis_colour(colour, 1.0),
        "outline_style": "solid",
        "outline_width": f"{OUTLINE_WIDTH_MM:g}",
        "outline_width_unit": "MM",
        "style": "solid",
    }


def class_style_qml(class_name: str) -> str:
    """The QML document of a class layer's default style.

    A single-symbol renderer with one simple fill: the class colour at :data:`FILL_OPACITY`, a
    solid outline of :data:`OUTLINE_WIDTH_MM` in the opaque class colour; simple labels showing
    :data:`LABEL_EXPRESSION`, switched off (``labelsEnabled="0"``) so the user can turn them on.
    Symbol properties are written both as ``Option`` maps (QGIS ≥ 3.16) and as ``prop``
    elements (older QGIS 3 releases), as QGIS 3.16 to 3.22 themselves write them.
    """
    root = ET.Element(
        "qgis", version="3.22.0", styleCategories="Symbology|Labeling", labelsEnabled="0"
    )
    renderer = ET.SubElement(
        root,
        "renderer-v2",
        type="singleSymbol",
        symbollevels="0",
        forceraster="0",
        enableorderby="0",
    )
    symbols = ET.SubElement(renderer, "symbols")
    symbol = ET.SubElement(
        symbols, "symbol", type="fill", name="0", alpha="1", clip_to_extent="1", force_rhr="0"
    )
    layer = ET.SubElement(
        symbol, "layer", {"class": "SimpleFill", "enabled": "1", "pass": "0", "locked": "0"}
    )
    properties = _fill_properties(class_name)
    options = ET.SubElement(layer, "Option", type="Map")
    for key, value in properties.items():
        ET.SubElement(options, "Option", type="QString", name=key, value=value)
    for key, value in properties.items():
        ET.SubElement(layer, "prop", k=key, v=value)
    ET.SubElement(renderer, "rotation")
    ET.SubElement(renderer, "sizescale")
    labeling = ET.SubElement(root, "labeling", type="simple")
    settings = ET.SubElement(labeling, "settings", calloutType="simple")
    text_style = ET.SubElement(
        settings,
        "text-style",
        fieldName=LABEL_EXPRESSION,
        isExpression="1",
        fontSize="9",
        fontSizeUnit="Point",
        textColor="0,0,0,255",
        textOpacity="1",
    )
    ET.SubElement(
        text_style,
        "text-buffer",
        bufferDraw="1",
        bufferSize="0.8",
        bufferSizeUnits="MM",
        bufferColor="255,255,255,255",
        bufferOpacity="1",
    )
    ET.SubElement(settings, "placement", placement="1", dist="0", distUnits="MM")
    ET.SubElement(settings, "rendering", obstacle="1", scaleVisibility="0", drawLabels="1")
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerGeometryType").text = "2"
    ET.indent(root)
    return _QML_DOCTYPE + ET.tostring(root, encoding="unicode") + "\n"


def class_style_sld(class_name: str) -> str:
    """The SLD 1.1 document of the same style, as QGIS exports it (for GeoServer and others)."""
    colour = class_colour(class_name)
    for prefix, uri in (("", _SLD), ("se", _SE), ("ogc", _OGC), ("xsi", _XSI)):
        ET.register_namespace(prefix, uri)
    root = ET.Element(
        f"{{{_SLD}}}StyledLayerDescriptor",
        {
            "version": "1.1.0",
            f"{{{_XSI}}}schemaLocation": (
                f"{_SLD} http://schemas.opengis.net/sld/1.1.0/StyledLayerDescriptor.xsd"
            ),
        },
    )
    named = ET.SubElement(root, f"{{{_SLD}}}NamedLayer")
    ET.SubElement(named, f"{{{_SE}}}Name").text = class_name
    user_style = ET.SubElement(named, f"{{{_SLD}}}UserStyle")
    ET.SubElement(user_style, f"{{{_SE}}}Name").text = class_name
    rule = ET.SubElement(ET.SubElement(user_style, f"{{{_SE}}}FeatureTypeStyle"), f"{{{_SE}}}Rule")
    ET.SubElement(rule, f"{{{_SE}}}Name").text = class_name
    polygon = ET.SubElement(rule, f"{{{_SE}}}PolygonSymbolizer")
    fill = ET.SubElement(polygon, f"{{{_SE}}}Fill")
    stroke = ET.SubElement(polygon, f"{{{_SE}}}Stroke")
    # 1 mm is 3.78 px at the 0.28 mm pixel of the SLD standard.
    stroke_px = OUTLINE_WIDTH_MM / 0.28
    for parent, name, value in (
        (fill, "fill", colour),
        (fill, "fill-opacity", f"{FILL_OPACITY:g}"),
        (stroke, "stroke", colour),
        (stroke, "stroke-width", f"{stroke_px:.2f}"),
        (stroke, "stroke-linejoin", "bevel"),
    ):
        ET.SubElement(parent, f"{{{_SE}}}SvgParameter", name=name).text = value
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def add_layer_styles(path: Path, class_names: Sequence[str], geometry_column: str = "geom") -> None:
    """Add ``layer_styles`` with one default style per class layer to a GeoPackage.

    The table is registered in ``gpkg_contents`` as an ``attributes`` table and counted in
    ``gpkg_ogr_contents`` with GDAL's count triggers, as GDAL registers the table QGIS creates,
    so QGIS can later add or replace styles in it. ``f_table_catalog`` and ``f_table_schema`` are
    empty strings: QGIS looks styles up with ``f_table_schema=''``.

    Raises
    ------
    sqlite3.Error
        If the file is not writable or already has a ``layer_styles`` table.
    """
    rows = [
        (
            "",
            "",
            name,
            geometry_column,
            STYLE_NAME,
            class_style_qml(name),
            class_style_sld(name),
            True,
            f"geoseg default style of the {name} layer",
            "",
        )
        for name in class_names
    ]
    with sqlite3.connect(path) as connection:
        connection.execute(LAYER_STYLES_SQL)
        connection.executemany(
            'INSERT INTO "layer_styles" (f_table_catalog, f_table_schema, f_table_name, '
            "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, owner) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        connection.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, srs_id) "
            "VALUES ('layer_styles', 'attributes', 'layer_styles', '', 0)"
        )
        connection.execute(
            "INSERT INTO gpkg_ogr_contents (table_name, feature_count) VALUES ('layer_styles', ?)",
            (len(rows),),
        )
        connection.execute(_TRIGGER.format(action="insert", event="INSERT", sign="+"))
        connection.execute(_TRIGGER.format(action="delete", event="DELETE", sign="-"))
    connection.close()
