"""A real webhook receiver for the tests: a threaded ``http.server`` on a free loopback port that records every
request and answers from a script (status, delay), as a receiver on another machine would."""

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

from webhooks.signing import SIGNATURE_HEADER, signature_verify


@dataclass(frozen=True)
class Answer:
    status: int = 200
    delay: float = 0.0  # seconds before answering (a slow receiver)
    headers: dict = field(default_factory=dict)
    body: bytes = b"ok"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict
    body: bytes

    @property
    def json(self) -> dict:
        return orjson.loads(self.body)

    @property
    def delivery(self) -> str:
        return self.headers["X-SensorSync-Delivery"]

    def verifies(self, secret: str) -> bool:
        return signature_verify(secret=secret, body=self.body, header=self.headers[SIGNATURE_HEADER])


class Receiver:
    """Answers each POST with the next scripted ``Answer`` (then ``default``), and keeps every request it read."""

    def __init__(self, *answers: Answer, default: Answer | None = None) -> None:
        self.script = deque(answers)
        self.default = default or Answer()
        self.received: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.received.append(Received(self.path, dict(self.headers), body))
                    answer = receiver.script.popleft() if receiver.script else receiver.default
                time.sleep(answer.delay)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:
                    pass  # the sender gave up waiting (its timeout)

            def log_message(self, format, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/sensorsync"

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def of_type(self, event_type: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.headers.get("X-SensorSync-Event") == event_type]
