"""A small OpenAI-protocol chat-completions server (POST /v1/chat/completions) on the standard
library's ThreadingHTTPServer: the `shapes` backend, the tests' scripted servers and the
benchmark all answer through it.

`answer(request) -> str | Reply`: a text becomes a normal completion; a `Reply` sends a status,
headers and a raw body (for injected faults), or, with `hang`, holds the connection open.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

PATH = "/v1/chat/completions"


@dataclasses.dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    hang_s: float = 0.0  # sleep this long before answering (a hung request)
    cut_after: int = -1  # >= 0: announce the whole body, send this many bytes, close (cut short)


def completion(text: str, model: str, prompt_bytes: int) -> bytes:
    """An OpenAI chat.completion body; token counts are ~4 bytes of text per token."""
    return json.dumps({
        "id": "chatcmpl-local", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_bytes // 4, "completion_tokens": len(text) // 4 + 1,
                  "total_tokens": prompt_bytes // 4 + len(text) // 4 + 1},
    }).encode()


class ChatServer:
    """Serves `answer` on 127.0.0.1 in a background thread, each request `latency_s` late.

    `authorizations` records the Authorization header of every request (so tests can check
    the key was sent); `requests` counts them.
    """

    def __init__(self, answer: Callable[[dict[str, Any]], str | Reply], latency_s: float = 0.0,
                 host: str = "127.0.0.1", port: int = 0):
        self.answer, self.latency_s = answer, latency_s
        self.requests = 0
        self.authorizations: list[str | None] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # no per-request stderr lines
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                data = self.rfile.read(length)
                with server._lock:
                    server.requests += 1
                    server.authorizations.append(self.headers.get("Authorization"))
                if self.path != PATH:
                    return self._send(Reply(404, b'{"error": "not found"}'))
                try:
                    request = json.loads(data)
                except ValueError:
                    return self._send(Reply(400, b'{"error": "body is not JSON"}'))
                if server.latency_s:
                    time.sleep(server.latency_s)
                result = server.answer(request)
                if isinstance(result, str):
                    result = Reply(200, completion(result, request.get("model", ""), len(data)))
                if result.hang_s:
                    time.sleep(result.hang_s)
                self._send(result)

            def _send(self, reply: Reply):
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply.body)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    if reply.cut_after >= 0:
                        self.wfile.write(reply.body[:reply.cut_after])
                        self.close_connection = True
                    else:
                        self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self.httpd = Server((host, port), Handler)
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://{host}:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ChatServer":
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> "ChatServer":
        return self.__enter__()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def messages_text(request: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """(system text, user text, image data URL or None) of a chat request."""
    system = user = ""
    image = None
    for message in request.get("messages", []):
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            if part.get("type") == "text":
                if message.get("role") == "system":
                    system += part["text"]
                else:
                    user += part["text"]
            elif part.get("type") == "image_url":
                image = part["image_url"]["url"]
    return system, user, image
