"""Tools for geoseg's outputs: read a ``geoseg run`` GeoPackage, summarise and export it.

``results`` reads and checks a GeoPackage, ``summary`` computes per-class, per-source area
statistics and ``export`` converts the objects to COCO, GeoJSON, shapefiles or GeoParquet. The
computations are pure functions over :class:`~geoseg.reports.results.Results`; only the
``read_*`` and ``write_*`` functions touch files.
"""
