#!/usr/bin/env bash
# Regenerates zurich-quicklook.png, the README's picture: the bundled sample through the default
# model, pictured at its native width (875 px), then reduced to 256 colours to stay small.
# Run from the repository root with geoseg[viz] installed.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
geoseg run samples/zurich_lawns.tif -o "$work/zurich.gpkg"
geoseg quicklook "$work/zurich.gpkg" samples/zurich_lawns.tif -o "$work/zurich.png" --max-size 875
python - "$work/zurich.png" docs/images/zurich-quicklook.png <<'PY'
import sys

from PIL import Image

picture = Image.open(sys.argv[1]).convert("RGB")
picture.quantize(256, method=Image.Quantize.FASTOCTREE).save(sys.argv[2], optimize=True)
PY
