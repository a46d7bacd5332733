"""A static file server with single-range ``Range`` support, as GDAL's /vsicurl/ needs.

``python tests/range_server.py FOLDER PORT`` serves FOLDER on 127.0.0.1:PORT until killed.
(``python -m http.server`` ignores Range headers.)
"""

from __future__ import annotations

import http.server
import sys
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Answers ``Range: bytes=start-[end]`` with 206 and just those bytes."""

    def send_head(self) -> Any:
        header = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not header or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        start_text, _, end_text = header.removeprefix("bytes=").partition("-")
        start = int(start_text)
        end = min(int(end_text) if end_text else size - 1, size - 1)
        file = open(path, "rb")  # noqa: SIM115 - do_GET closes it after copyfile
        file.seek(start)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.range_left = end - start + 1
        return file

    def copyfile(self, source: BinaryIO, outputfile: Any) -> None:  # type: ignore[override]
        left = getattr(self, "range_left", None)
        if left is None:
            super().copyfile(source, outputfile)
        else:
            outputfile.write(source.read(left))

    def log_message(self, format: str, *args: object) -> None:
        return None


if __name__ == "__main__":
    folder, port = sys.argv[1], int(sys.argv[2])
    handler = partial(RangeHandler, directory=folder)
    http.server.ThreadingHTTPServer(("127.0.0.1", port), handler).serve_forever()
