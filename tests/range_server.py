"""A static file server with single-range ``Range`` support, as GDAL's /vsicurl/ needs.

``python tests/range_server.py FOLDER PORT [--fail-first K] [--fail-after K] [--outage-from OFFSET
--outage-seconds S] [--failures-log FILE]`` serves FOLDER on 127.0.0.1:PORT until killed. (``python
-m http.server`` ignores Range headers.) The options inject faults into ranged GETs, counted from 1
across all clients: ``--fail-first K`` answers the first K with 503 (a transient outage: a client
that retries gets through), ``--fail-after K`` answers all after the K-th with 503 (a server that
went away; ``--fail-after 0`` never serves a range), and ``--outage-from OFFSET`` answers every
ranged GET with 503 for S seconds from the first one starting at or beyond byte OFFSET (an outage
while pixels are read, after the header was). ``--failures-log`` appends the start byte of every
request answered 503 to FILE, so a test can tell its faults were met.
"""

from __future__ import annotations

import argparse
import http.server
import itertools
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Answers ``Range: bytes=start-[end]`` with 206 and just those bytes, or injects a 503."""

    def __init__(self, *args: Any, fails: Any, failures_log: str | None, **kwargs: Any) -> None:
        self.fails = fails
        self.failures_log = failures_log
        super().__init__(*args, **kwargs)

    def send_head(self) -> Any:
        header = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not header or not path.is_file():
            return super().send_head()
        start_text, _, end_text = header.removeprefix("bytes=").partition("-")
        start = int(start_text)
        if self.fails(start):
            if self.failures_log:
                with open(self.failures_log, "a") as log:
                    log.write(f"{start}\n")
            self.send_error(503, "Service Unavailable (injected)")
            return None
        size = path.stat().st_size
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


def fault_rule(first: int, after: int | None, outage_from: int | None, outage_s: float) -> Any:
    """A thread-safe callable saying whether the next ranged GET, starting at a byte, fails."""
    counter, lock = itertools.count(1), threading.Lock()
    outage_ends: list[float] = []

    def fails(start: int) -> bool:
        with lock:
            number = next(counter)
            if outage_from is not None and start >= outage_from and not outage_ends:
                outage_ends.append(time.monotonic() + outage_s)
            if outage_ends and time.monotonic() < outage_ends[0]:
                return True
        return number <= first or (after is not None and number > after)

    return fails


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("port", type=int)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--fail-after", type=int)
    parser.add_argument("--outage-from", type=int)
    parser.add_argument("--outage-seconds", type=float, default=2.0)
    parser.add_argument("--failures-log")
    args = parser.parse_args()
    handler = partial(
        RangeHandler,
        directory=args.folder,
        fails=fault_rule(args.fail_first, args.fail_after, args.outage_from, args.outage_seconds),
        failures_log=args.failures_log,
    )
    http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler).serve_forever()
