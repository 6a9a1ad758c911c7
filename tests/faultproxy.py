"""An HTTP proxy on 127.0.0.1 that injects faults between a client and a GCS emulator.

Faults (chosen per request by a seeded RNG, on the requests that `applies(method, path,
body)` selects):
- "503": answer 503 Service Unavailable without forwarding;
- "reset": close the connection without forwarding or answering;
- "lost-response": forward (the write happens) then close without answering.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultProxy:
    def __init__(
        self, upstream: str, rate: float = 0.0, faults=("503", "reset"), seed: int = 0, applies=None
    ):
        self.upstream = urlsplit(upstream)
        self.rate = rate
        self.faults = tuple(faults)
        self.rng = random.Random(seed)
        self.applies = applies or (lambda method, path, body: True)
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.script: list[str] = []  # faults to inject first, in order, on applicable requests
        # Called with the fault's name after the request was (or was not) forwarded and
        # before the client learns anything: a competitor's write goes exactly there.
        self.on_fault = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy._decide(self.command, self.path, body or b"")
                if fault == "503":
                    payload = b'{"error": {"code": 503, "message": "injected"}}'
                    self.send_response(503)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if fault == "reset":
                    proxy._after(fault)
                    self._reset()
                    return
                conn = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=30
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if fault == "lost-response":
                    proxy._after(fault)
                    self._reset()
                    return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_HEADERS and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _reset(self):
                self.close_connection = True
                try:
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _after(self, fault: str) -> None:
        if self.on_fault is not None:
            self.on_fault(fault)

    def _decide(self, method: str, path: str, body: bytes) -> str | None:
        with self.lock:
            self.counts["requests"] += 1
            if not self.applies(method, path, body):
                return None
            if self.script:
                fault = self.script.pop(0)
            elif self.rate and self.rng.random() < self.rate:
                fault = self.rng.choice(self.faults)
            else:
                return None
            self.counts[fault] += 1
            return fault

    @property
    def injected(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "requests")

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
