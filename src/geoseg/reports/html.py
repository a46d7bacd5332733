"""A self-contained HTML report of a geoseg output: quicklook, summary, area charts, run.

One file with no external assets and no scripts: the quicklook is embedded as a base64 PNG,
the charts are inline SVG and the style is inline CSS, so the report can be mailed or archived
and opens offline. Every text from the GeoPackage (sources, class names, run parameters) is
escaped.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from html import escape

from geoseg.reports.frame import format_area
from geoseg.reports.quicklook import Quicklook
from geoseg.reports.results import Results
from geoseg.reports.summary import TABLE_HEADER, AreaSummary, number_cells
from geoseg.tasks.palette import class_colour

__all__ = ["MAX_SOURCE_CHARTS", "area_chart_svg", "render_report"]

MAX_SOURCE_CHARTS = 12
"""With more sources than this, only the chart totalling all of them is drawn."""

_ALL_SOURCES = "all sources"
_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1200px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 24px; margin-bottom: 4px; }
h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.meta { color: #555; margin-top: 0; }
figure { margin: 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ccc; }
figcaption { color: #555; font-size: 13px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e4e4e4; text-align: left;
         vertical-align: top; }
td.n { text-align: right; white-space: nowrap; }
th { white-space: nowrap; }
td.source { overflow-wrap: anywhere; min-width: 10em; }
td.class { white-space: nowrap; }
tr.shown td { background: #f3f8ee; }
tr.total td { font-weight: 600; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 6px;
          vertical-align: -1px; border-radius: 2px; }
.charts { display: flex; flex-wrap: wrap; gap: 16px 40px; }
.charts h3 { font-size: 15px; margin: 8px 0 4px; overflow-wrap: anywhere; }
pre { background: #f6f6f6; padding: 12px; overflow-x: auto; font-size: 13px; }
td.key { color: #555; white-space: nowrap; }
td.value { overflow-wrap: anywhere; }
"""


def render_report(results: Results, quicklook: Quicklook, rows: Sequence[AreaSummary]) -> str:
    """The HTML report of ``results`` with ``quicklook`` and the summary ``rows``.

    Parameters
    ----------
    results : Results
        The geoseg output.
    quicklook : Quicklook
        The picture of one of its rasters (see :func:`geoseg.reports.quicklook.make_quicklook`).
    rows : sequence of AreaSummary
        The output's summary (:func:`geoseg.reports.summary.summarize`); rows of the pictured
        raster are highlighted.
    """
    name = results.path.name
    picture = base64.b64encode(quicklook.png).decode("ascii")
    layout = quicklook.layout
    version = results.run.get("geoseg_version")
    model = results.run.get("model_name")
    meta = [f"{len(results.objects):,} objects in {len(results.sources):,} source raster(s)"]
    if model is not None:
        meta.append(f"model {model}")
    if version is not None:
        meta.append(f"geoseg {version}")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>geoseg report: {escape(name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>geoseg report: {escape(name)}</h1>",
        f'<p class="meta">{escape(" · ".join(meta))}</p>',
        "<h2>Quicklook</h2>",
        "<figure>",
        f'<img src="data:image/png;base64,{picture}" width="{layout.width}" '
        f'height="{layout.height}" alt="{escape(quicklook.source)} with its objects">',
        f"<figcaption>{escape(quicklook.source)} ({escape(quicklook.crs_name)}): objects "
        "filled and outlined in their class colour.</figcaption>",
        "</figure>",
        "<h2>Summary</h2>",
        _summary_table(rows, quicklook.source),
        "<h2>Area per class</h2>",
        _charts(rows),
        "<h2>Run</h2>",
        _run_table(results.run),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _summary_table(rows: Sequence[AreaSummary], shown: str) -> str:
    lines = ["<table>", "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in TABLE_HEADER) + "</tr>"]
    for row in rows:
        css = "total" if row.source is None else "shown" if row.source == shown else ""
        numbers = number_cells(row)
        cells = [
            f'<td class="source">{escape(_ALL_SOURCES if row.source is None else row.source)}</td>',
            f'<td class="class">{_swatch(row.class_name)}{escape(row.class_name)}</td>',
            *(f'<td class="n">{number}</td>' for number in numbers),
        ]
        lines.append(f'<tr class="{css}">' + "".join(cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _swatch(class_name: str) -> str:
    return f'<span class="swatch" style="background:{class_colour(class_name)}"></span>'


def _charts(rows: Sequence[AreaSummary]) -> str:
    sources = list(dict.fromkeys(row.source for row in rows))
    if len(sources) > MAX_SOURCE_CHARTS:
        sources = [None]
    charts = []
    for source in sources:
        title = _ALL_SOURCES if source is None else source
        bars = [(row.class_name, row.total_area_m2) for row in rows if row.source == source]
        charts.append(f"<div><h3>{escape(title)}</h3>{area_chart_svg(bars, title)}</div>")
    return '<div class="charts">' + "".join(charts) + "</div>"


def area_chart_svg(bars: Sequence[tuple[str, float]], title: str) -> str:
    """A horizontal bar chart of ground areas as inline SVG: one bar per ``(class, area_m2)``,
    in the class's colour, labelled with the class and the area."""
    label_px, bar_px, value_px, row_px = 150, 260, 90, 26
    width = label_px + bar_px + value_px
    height = row_px * max(len(bars), 1) + 4
    largest = max((area for _, area in bars), default=0.0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(f"ground area per class, {title}")}" '
        'font-family="system-ui, sans-serif" font-size="13">'
    ]
    for number, (class_name, area) in enumerate(bars):
        y = 2 + number * row_px
        length = max(bar_px * area / largest, 1.0 if area > 0 else 0.0)
        short = class_name if len(class_name) <= 20 else class_name[:19] + "…"
        parts += [
            f'<text x="{label_px - 8}" y="{y + 17}" text-anchor="end">{escape(short)}</text>',
            f'<rect x="{label_px}" y="{y + 4}" width="{length:.1f}" height="{row_px - 8}" '
            f'fill="{class_colour(class_name)}"><title>{escape(class_name)}: '
            f"{area:,.1f} m²</title></rect>",
            f'<text x="{label_px + length + 6:.1f}" y="{y + 17}" fill="#444">'
            f"{escape(format_area(area))}</text>",
        ]
    parts.append("</svg>")
    return "".join(parts)


def _run_table(run: dict[str, str | int | float | None]) -> str:
    lines = ["<table>"]
    for key, value in run.items():
        if key == "config":
            continue
        text = "" if value is None else str(value)
        lines.append(
            f'<tr><td class="key">{escape(key)}</td><td class="value">{escape(text)}</td></tr>'
        )
    lines.append("</table>")
    config = run.get("config")
    if isinstance(config, str) and config:
        lines += [
            "<h3>Run file</h3>",
            "<p>Saved as <code>run.json</code>, it repeats the run: "
            "<code>geoseg run --config run.json -o again.gpkg</code></p>",
            f"<pre>{escape(_indented_json(config))}</pre>",
        ]
    return "\n".join(lines)


def _indented_json(text: str) -> str:
    """JSON text indented for reading; text that is not JSON as it is."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except json.JSONDecodeError:
        return text
