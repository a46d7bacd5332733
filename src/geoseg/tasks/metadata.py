"""GeoPackage metadata describing a geoseg output: what it holds and how it was made.

Written as QGIS writes layer metadata to a GeoPackage (``QgsOgrProviderMetadata::
saveLayerMetadata``): a QGIS metadata document (``md_standard_uri`` ``http://mrcc.com/qgis.dtd``)
in the metadata extension's ``gpkg_metadata`` table, referenced from ``gpkg_metadata_reference``
with scope ``table`` for each class layer, so QGIS shows title, abstract, keywords and history in
the layer's Metadata properties; one more document with scope ``geopackage`` describes the whole
file (GDAL lists it as ``GPKG_METADATA_ITEM_1``). A class layer's abstract is also its
``gpkg_contents.description``, which the writer sets through GDAL.

GDAL's own metadata format (``md_standard_uri`` ``http://gdal.org``) is not used for the
dataset: reading such a file with pyogrio's GDAL 3.12 leaves an ``.aux.xml`` file beside it.
"""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "QGIS_METADATA_URI",
    "TITLE",
    "add_metadata",
    "class_layer_description",
    "metadata_document",
    "provenance",
]

TITLE = "geoseg objects"
"""Title of the whole GeoPackage."""

QGIS_METADATA_URI = "http://mrcc.com/qgis.dtd"
"""``md_standard_uri`` of QGIS layer metadata documents."""

_PROVENANCE = (
    ("geoseg_version", "geoseg version"),
    ("model_name", "model"),
    ("model_sha256", "model sha256"),
    ("sources", "sources"),
    ("output_crs", "output CRS"),
    ("area_method", "areas"),
    ("started_at", "started"),
    ("finished_at", "finished"),
)
_DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
# The tables and extension rows GDAL creates for the GeoPackage metadata extension.
_METADATA_SQL = (
    "CREATE TABLE IF NOT EXISTS gpkg_metadata (id INTEGER CONSTRAINT m_pk PRIMARY KEY ASC NOT NULL,"
    "md_scope TEXT NOT NULL DEFAULT 'dataset',md_standard_uri TEXT NOT NULL,"
    "mime_type TEXT NOT NULL DEFAULT 'text/xml',metadata TEXT NOT NULL DEFAULT '')",
    "CREATE TABLE IF NOT EXISTS gpkg_metadata_reference (reference_scope TEXT NOT NULL,"
    "table_name TEXT,column_name TEXT,row_id_value INTEGER,timestamp DATETIME NOT NULL DEFAULT "
    "(strftime('%Y-%m-%dT%H:%M:%fZ','now')),md_file_id INTEGER NOT NULL,md_parent_id INTEGER,"
    "CONSTRAINT crmr_mfi_fk FOREIGN KEY (md_file_id) REFERENCES gpkg_metadata(id),"
    "CONSTRAINT crmr_mpi_fk FOREIGN KEY (md_parent_id) REFERENCES gpkg_metadata(id))",
    "INSERT OR IGNORE INTO gpkg_extensions VALUES ('gpkg_metadata', NULL, 'gpkg_metadata', "
    "'http://www.geopackage.org/spec120/#extension_metadata', 'read-write')",
    "INSERT OR IGNORE INTO gpkg_extensions VALUES ('gpkg_metadata_reference', NULL, "
    "'gpkg_metadata', 'http://www.geopackage.org/spec120/#extension_metadata', 'read-write')",
)


def class_layer_description(class_name: str) -> str:
    """The abstract of a class layer (also its ``gpkg_contents.description``)."""
    return (
        f"{class_name} objects found by geoseg: one MultiPolygon per object with its model score, "
        "geodesic ground area (area_m2, square metres), perimeter (perimeter_m, metres) "
        "and source raster"
    )


def provenance(run: Mapping[str, str | int | float | None]) -> list[str]:
    """``label: value`` lines of how the objects were made, from the ``run`` table's row.

    Sources are taken as the run table holds them, already stripped of credentials.

    >>> provenance({"model_name": "greenery", "tile_size": 512, "geoseg_version": "0.1.0"})
    ['geoseg version: 0.1.0', 'model: greenery']
    """
    return [f"{label}: {run[key]}" for key, label in _PROVENANCE if run.get(key) not in (None, "")]


def metadata_document(
    identifier: str, title: str, abstract: str, keywords: Sequence[str], history: Sequence[str]
) -> str:
    """A QGIS layer metadata document (the XML QGIS stores in ``gpkg_metadata``)."""
    root = ET.Element("qgis", version="3.22.0")
    for tag, text in (
        ("identifier", identifier),
        ("parentidentifier", ""),
        ("language", ""),
        ("type", "dataset"),
        ("title", title),
        ("abstract", abstract),
    ):
        ET.SubElement(root, tag).text = text
    vocabulary = ET.SubElement(root, "keywords", vocabulary="geoseg")
    for keyword in keywords:
        ET.SubElement(vocabulary, "keyword").text = keyword
    for line in history:
        ET.SubElement(root, "history").text = line
    ET.indent(root)
    return _DOCTYPE + ET.tostring(root, encoding="unicode") + "\n"


def add_metadata(
    path: Path, class_names: Sequence[str], run: Mapping[str, str | int | float | None]
) -> None:
    """Describe the GeoPackage and each class layer in the GeoPackage metadata extension.

    Raises
    ------
    sqlite3.Error
        If the file cannot be written.
    """
    history = provenance(run)
    keywords = ["geoseg", "instance segmentation", *class_names]
    documents = [
        (
            "geopackage",
            None,
            metadata_document(
                TITLE,
                TITLE,
                f"Objects of class {', '.join(class_names)} segmented from rasters by geoseg, "
                "one layer per class, measured on the ellipsoid (area_m2, perimeter_m); the "
                "summary table counts them per source raster and class, the run table records "
                "how they were made.",
                keywords,
                history,
            ),
        ),
        *(
            (
                "table",
                name,
                metadata_document(
                    name,
                    f"{name} objects",
                    class_layer_description(name),
                    ["geoseg", name],
                    history,
                ),
            )
            for name in class_names
        ),
    ]
    with sqlite3.connect(path) as connection:
        for statement in _METADATA_SQL:
            connection.execute(statement)
        for scope, table, document in documents:
            cursor = connection.execute(
                "INSERT INTO gpkg_metadata (md_scope, md_standard_uri, mime_type, metadata) "
                "VALUES ('dataset', ?, 'text/xml', ?)",
                (QGIS_METADATA_URI, document),
            )
            connection.execute(
                "INSERT INTO gpkg_metadata_reference (reference_scope, table_name, md_file_id) "
                "VALUES (?, ?, ?)",
                (scope, table, cursor.lastrowid),
            )
    connection.close()
