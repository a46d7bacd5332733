#!/usr/bin/env bash
# Regenerates kampala-quicklook.png, the README's picture: the bundled sample through the default
# model, pictured 800 px high, then reduced to 256 colours to stay small.
# Run from the repository root with geoseg[viz] installed.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
geoseg run samples/kampala_buildings.tif -o "$work/kampala.gpkg"
geoseg quicklook "$work/kampala.gpkg" samples/kampala_buildings.tif -o "$work/kampala.png" \
    --max-size 800
python - "$work/kampala.png" docs/images/kampala-quicklook.png <<'PY'
import sys

from PIL import Image

picture = Image.open(sys.argv[1]).convert("RGB")
picture.quantize(256, method=Image.Quantize.FASTOCTREE).save(sys.argv[2], optimize=True)
PY
