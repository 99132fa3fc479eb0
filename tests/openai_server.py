"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions API, for tests.

Answers come from a script: a callable `handler(request_json) -> Reply` (or a list of Replies,
used in order, the last one repeated). Every request is recorded in `server.requests`.

    with OpenAIServer([Reply(content="hi"), Reply(status=429)]) as server:
        litellm.completion(model="openai/x", api_base=server.url, api_key="k", ...)
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Reply:
    content: str | None = None
    tool_calls: list[dict] | None = None
    status: int = 200
    #: Error body for status != 200 (OpenAI error shape is built from it).
    error_message: str = "error"
    error_code: str | None = None
    delay: float = 0.0
    prompt_tokens: int = 10
    completion_tokens: int = 5
    #: Close the connection without answering (a network failure).
    drop: bool = False
    extra_message: dict = field(default_factory=dict)
    #: Sent as the whole 200 body instead of a chat completion (e.g. b"<html>garbage"): a malformed reply.
    raw_body: bytes | None = None
    #: Seconds between single bytes of the body (a server that trickles its answer).
    trickle: float = 0.0


def tool_call(name: str, arguments: dict, call_id: str | None = None) -> dict:
    return {
        "id": call_id or f"call_{uuid.uuid4().hex[:12]}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


class OpenAIServer:
    def __init__(self, script: Callable[[dict], Reply] | list[Reply], model: str = "test-model"):
        self.model = model
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        if callable(script):
            self._handler = script
        else:
            replies = list(script)

            def handler(_request: dict) -> Reply:
                with self._lock:
                    return replies.pop(0) if len(replies) > 1 else replies[0]

            self._handler = handler
        # A real server's listen backlog: the default of 5 drops connections of a 16-worker batch,
        # whose clients then wait a second for the SYN retry.
        ThreadingHTTPServer.request_queue_size = 128
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._make_handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "OpenAIServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _make_handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; without this, Nagle + delayed ACK add ~40 ms.
            disable_nagle_algorithm = True

            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, body: dict | bytes, trickle: float = 0.0) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not trickle:
                    self.wfile.write(data)
                    return
                try:
                    for i in range(len(data)):
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                        time.sleep(trickle)
                except OSError:  # the client gave up
                    pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                else:
                    self._send(200, {"status": "ok"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append(request)
                reply = server._handler(request)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                if reply.raw_body is not None:
                    self._send(200, reply.raw_body, reply.trickle)
                    return
                if reply.status != 200:
                    error = {"message": reply.error_message, "type": "error", "code": reply.error_code}
                    self._send(reply.status, {"error": error})
                    return
                message = {"role": "assistant", "content": reply.content, **reply.extra_message}
                if reply.tool_calls:
                    message["tool_calls"] = reply.tool_calls
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": request.get("model", server.model),
                        "choices": [
                            {
                                "index": 0,
                                "message": message,
                                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": reply.prompt_tokens,
                            "completion_tokens": reply.completion_tokens,
                            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                        },
                    },
                    reply.trickle,
                )

        return Handler
