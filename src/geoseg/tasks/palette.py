"""One colour per class, shared by the QGIS styles in the GeoPackage and by quicklooks.

Known classes get colours that read as what they are (lawns green, water blue, buildings
brick red); any other class name gets a colour of the Tableau 10 palette chosen from a stable
hash of the name, so the same class has the same colour in every output and every run.
"""

from __future__ import annotations

import hashlib

KNOWN = {
    "lawn": "#7bc043",
    "vegetation": "#4c9a2a",
    "tree": "#2e6b30",
    "building": "#c0392b",
    "bridge": "#f39c12",
    "road": "#7f8c8d",
    "water": "#2e86c1",
    "car": "#8e44ad",
}
TABLEAU_10 = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)


def class_colour(name: str) -> str:
    """The ``#rrggbb`` colour of a class, the same for the same name everywhere.

    >>> class_colour("lawn")
    '#7bc043'
    """
    known = KNOWN.get(name.lower())
    if known is not None:
        return known
    digest = hashlib.sha256(name.encode()).digest()
    return TABLEAU_10[digest[0] % len(TABLEAU_10)]


def rgb(colour: str) -> tuple[int, int, int]:
    """The 0-255 red, green and blue of a ``#rrggbb`` colour."""
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)
