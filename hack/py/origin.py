"""The test cluster's model origin: a static file server with HTTP Range support that logs, per
request, the file and the bytes it sent, so tests can prove a file crossed the "uplink" once.

    python3 hack/py/origin.py --dir DIR --port PORT --log FILE [--bind ADDR]

Each served request appends one JSON line to FILE: {"path", "start", "end", "sent", "status",
"method"}. Files are read at request time, so a test may add files (a corrupted copy, say) while
it runs. Stdlib only, like the rest of hack/py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHUNK = 256 << 10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", required=True, type=Path)
    ap.add_argument("--port", required=True, type=int)
    ap.add_argument("--log", required=True, type=Path)
    # Loopback unless told: the distribution bench runs the origin in a network namespace.
    ap.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    args = ap.parse_args()
    root = args.dir.resolve()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *a: object) -> None:  # quiet: the JSON log is the record
            pass

        def record(self, **kv: object) -> None:
            with lock, args.log.open("a") as f:
                f.write(json.dumps(kv) + "\n")

        def serve(self, body: bool) -> None:
            name = self.path.split("?", 1)[0].lstrip("/")
            path = root / name
            # No way out of the directory; symlinks inside it (to cached test models) are fine.
            if ".." in Path(name).parts or not path.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.record(path=name, status=404, sent=0)
                return
            total = path.stat().st_size
            start, end = 0, total
            status = 200
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
            if m:
                start = int(m.group(1))
                end = min(int(m.group(2)) + 1, total) if m.group(2) else total
                if start >= end:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{total}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            self.send_response(status)
            self.send_header("Content-Length", str(end - start))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{total}")
            self.end_headers()
            sent = 0
            if body:
                with path.open("rb") as f:
                    f.seek(start)
                    pos = start
                    try:
                        while pos < end:
                            chunk = f.read(min(CHUNK, end - pos))
                            if not chunk:
                                break
                            self.wfile.write(chunk)
                            pos += len(chunk)
                            sent += len(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
            self.record(path=name, start=start, end=end, sent=sent, status=status, method=self.command)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.serve(True)

        def do_HEAD(self) -> None:  # noqa: N802
            self.serve(False)

    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    print(f"origin serving {root} on {args.bind}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
