"""A real HTTP server on 127.0.0.1 that speaks Anthropic's Messages API (`POST /v1/messages`), for tests.

It checks each request the way the real API does and answers a malformed one with HTTP 400 and
Anthropic's error shape (recorded in `server.invalid`): the `x-api-key` and `anthropic-version`
headers; no body fields the API does not have; `max_tokens` present and positive; temperature and
top_p within [0, 1]; `messages` non-empty, starting with `user`, roles
alternating user/assistant; text blocks non-empty (not just whitespace); `tool_use` only in
assistant turns and every one answered by a `tool_result` at the start of the next user turn, every
`tool_result` answering a `tool_use` of the turn before; `tool_use`/`tool_result` only when `tools`
are defined, and tool_use names among them; tools with valid names and a valid JSON Schema
`input_schema` of type object; at most 4 `cache_control` breakpoints (tools, system and messages
together), each `{"type": "ephemeral"}`.

Answers come from a script: `handler(request) -> AReply` (or a list, used in order, the last one
repeated); `tool_use(name, input)` builds a tool call. Usage is computed like the real prompt
cache does it: tokens are characters / 4 of the request in prompt order (tools, system,
messages); the longest prefix (at a block boundary) that an earlier request wrote at one of its
breakpoints is a cache read, the rest up to this request's last breakpoint a cache write, the rest
plain input. Every answered usage is kept in
`server.usages`, in order.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

MAX_BREAKPOINTS = 4
#: The request body's fields (Messages API); anything else is refused, as the API does.
REQUEST_FIELDS = {"model", "messages", "max_tokens", "system", "tools", "tool_choice", "temperature", "top_p", "top_k",
                  "stop_sequences", "stream", "metadata", "thinking", "service_tier"}
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass
class AReply:
    text: str = ""
    tool_uses: list[dict] = field(default_factory=list)
    status: int = 200
    error_type: str = "api_error"
    error_message: str = "error"
    output_tokens: int = 7


def tool_use(name: str, arguments: dict) -> dict:
    return {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}", "name": name, "input": arguments}


class InvalidRequest(ValueError):
    pass


def _blocks(content: Any, where: str) -> list[dict]:
    if isinstance(content, str):
        if not content.strip():
            raise InvalidRequest(f"{where}: text content blocks must contain non-whitespace text")
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise InvalidRequest(f"{where}: content must be a non-empty string or list of content blocks")
    for i, block in enumerate(content):
        if not isinstance(block, dict) or "type" not in block:
            raise InvalidRequest(f"{where}.content.{i}: a content block needs a type")
    return content


def _check_text(block: dict, where: str) -> None:
    text = block.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest(f"{where}: text content blocks must contain non-whitespace text")


def _check_cache_control(block: dict, where: str) -> int:
    if "cache_control" not in block:
        return 0
    if block["cache_control"] != {"type": "ephemeral"} and not (
        isinstance(block["cache_control"], dict) and block["cache_control"].get("type") == "ephemeral"
        and set(block["cache_control"]) <= {"type", "ttl"}
    ):
        raise InvalidRequest(f"{where}.cache_control: type must be 'ephemeral'")
    return 1


def _check_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise InvalidRequest(f"{where}.input_schema: must be a JSON Schema object with type 'object'")
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema comes with litellm
        return
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise InvalidRequest(f"{where}.input_schema: JSON schema is invalid: {e.message}") from None


def validate_request(request: dict, headers: dict) -> None:
    """Raise InvalidRequest with the real API's kind of message for what it would refuse."""
    if not headers.get("x-api-key"):
        raise InvalidRequest("x-api-key header is required")
    if not headers.get("anthropic-version"):
        raise InvalidRequest("anthropic-version: header is required")
    extra = sorted(set(request) - REQUEST_FIELDS)
    if extra:
        raise InvalidRequest(f"{extra[0]}: Extra inputs are not permitted")
    if not isinstance(request.get("model"), str) or not request["model"]:
        raise InvalidRequest("model: field required")
    for key in ("temperature", "top_p"):
        value = request.get(key)
        if value is not None and (not isinstance(value, (int, float)) or not 0 <= value <= 1):
            raise InvalidRequest(f"{key}: Input should be less than or equal to 1 and at least 0 (got {value!r})")
    if "stop_sequences" in request and (not isinstance(request["stop_sequences"], list)
                                        or not all(isinstance(x, str) and x.strip() for x in request["stop_sequences"])):
        raise InvalidRequest("stop_sequences: each stop sequence must contain non-whitespace")
    choice = request.get("tool_choice")
    if choice is not None and (not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none")):
        raise InvalidRequest("tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'")
    max_tokens = request.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidRequest("max_tokens: field required (a positive integer)")
    breakpoints = 0
    tools = request.get("tools")
    tool_names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("tools: must be a list")
        for i, tool in enumerate(tools):
            where = f"tools.{i}"
            name = tool.get("name") if isinstance(tool, dict) else None
            if not isinstance(name, str) or not _TOOL_NAME.match(name):
                raise InvalidRequest(f"{where}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
            if name in tool_names:
                raise InvalidRequest(f"tools: Tool names must be unique ({name})")
            tool_names.add(name)
            _check_schema(tool.get("input_schema"), where)
            unknown = set(tool) - {"name", "description", "input_schema", "cache_control", "type"}
            if unknown:
                raise InvalidRequest(f"{where}.{sorted(unknown)[0]}: Extra inputs are not permitted")
            breakpoints += _check_cache_control(tool, where)
    system = request.get("system")
    if system is not None:
        if isinstance(system, str):
            if not system.strip():
                raise InvalidRequest("system: text content blocks must contain non-whitespace text")
        else:
            for i, block in enumerate(_blocks(system, "system")):
                if block.get("type") != "text":
                    raise InvalidRequest(f"system.{i}: only text blocks are allowed in system")
                _check_text(block, f"system.{i}")
                breakpoints += _check_cache_control(block, f"system.{i}")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: at least one message is required")
    previous_tool_uses: set[str] = set()
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise InvalidRequest(f"{where}.role: Input should be 'user' or 'assistant'")
        if i == 0 and role != "user":
            raise InvalidRequest("messages: the first message must use the user role")
        if i > 0 and role == messages[i - 1]["role"]:
            raise InvalidRequest(f"messages: roles must alternate between 'user' and 'assistant' (messages.{i - 1} and {i} are both {role})")
        blocks = _blocks(message.get("content"), where)
        tool_uses: set[str] = set()
        results: list[str] = []
        seen_other = False
        for j, block in enumerate(blocks):
            at = f"{where}.content.{j}"
            kind = block["type"]
            breakpoints += _check_cache_control(block, at)
            if kind == "text":
                _check_text(block, at)
                seen_other = True
            elif kind == "tool_use":
                if role != "assistant":
                    raise InvalidRequest(f"{at}: tool_use blocks are only allowed in assistant messages")
                if not tools:
                    raise InvalidRequest("Requests which include `tool_use` or `tool_result` blocks must define tools.")
                if block.get("name") not in tool_names:
                    raise InvalidRequest(f"{at}: tool_use names a tool that is not defined: {block.get('name')!r}")
                if not isinstance(block.get("input"), dict) or not isinstance(block.get("id"), str):
                    raise InvalidRequest(f"{at}: tool_use needs an id and an input object")
                tool_uses.add(block["id"])
            elif kind == "tool_result":
                if role != "user":
                    raise InvalidRequest(f"{at}: tool_result blocks are only allowed in user messages")
                if not tools:
                    raise InvalidRequest("Requests which include `tool_use` or `tool_result` blocks must define tools.")
                if seen_other:
                    raise InvalidRequest(f"{at}: tool_result blocks must come first in the user message")
                if block.get("tool_use_id") not in previous_tool_uses:
                    raise InvalidRequest(f"{at}: unexpected `tool_use_id` found in `tool_result` blocks: "
                                         f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                                         "`tool_use` block in the previous message.")
                inner = block.get("content", "")
                if isinstance(inner, list):
                    for k, part in enumerate(inner):
                        if part.get("type") == "text":
                            _check_text(part, f"{at}.content.{k}")
                        breakpoints += _check_cache_control(part, f"{at}.content.{k}")
                results.append(block["tool_use_id"])
            elif kind != "image":
                raise InvalidRequest(f"{at}.type: unknown content block type {kind!r}")
        if previous_tool_uses and set(results) != previous_tool_uses:
            missing = sorted(previous_tool_uses - set(results))
            raise InvalidRequest(f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                                 f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block "
                                 "in the next message.")
        previous_tool_uses = tool_uses
    if breakpoints > MAX_BREAKPOINTS:
        raise InvalidRequest(f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {breakpoints}.")


def _prompt_segments(request: dict) -> list[tuple[str, bool]]:
    """The prompt in cache order (tools, system, messages) as (text, ends a breakpoint) pieces."""
    segments: list[tuple[str, bool]] = []
    for tool in request.get("tools") or []:
        segments.append((json.dumps({k: v for k, v in tool.items() if k != "cache_control"}, sort_keys=True), "cache_control" in tool))
    system = request.get("system")
    for block in ([{"type": "text", "text": system}] if isinstance(system, str) else system or []):
        segments.append((block["text"], "cache_control" in block))
    for message in request["messages"]:
        segments.append((message["role"], False))
        content = message["content"]
        for block in ([{"type": "text", "text": content}] if isinstance(content, str) else content):
            marked = "cache_control" in block
            clean = {k: v for k, v in block.items() if k != "cache_control"}
            if isinstance(clean.get("content"), str):  # the same prompt as one text block
                clean["content"] = [{"type": "text", "text": clean["content"]}]
            if isinstance(clean.get("content"), list):
                marked = marked or any("cache_control" in p for p in clean["content"])
                clean["content"] = [{k: v for k, v in p.items() if k != "cache_control"} for p in clean["content"]]
            segments.append((json.dumps(clean, sort_keys=True), marked))
    return segments


class AnthropicServer:
    def __init__(self, script: Callable[[dict], AReply] | list[AReply]):
        self.requests: list[dict] = []
        self.invalid: list[str] = []
        self.usages: list[dict] = []
        self._cache: set[str] = set()
        self._lock = threading.Lock()
        if callable(script):
            self._handler = script
        else:
            replies = list(script)
            self._handler = lambda _r: replies.pop(0) if len(replies) > 1 else replies[0]
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._make_handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """litellm's `anthropic/` provider appends /v1/messages to this api_base."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "AnthropicServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def usage(self, request: dict, output_tokens: int) -> dict:
        """Cache reads, writes and plain input for this request, updating the cache."""
        position, cached_upto, marks = 0, 0, []
        digest = hashlib.sha256()
        for text, marked in _prompt_segments(request):
            digest.update(text.encode())
            position += len(text)
            key = digest.copy().hexdigest()
            if key in self._cache:  # the real API also looks for hits before a breakpoint
                cached_upto = position
            if marked:
                marks.append((position, key))
        total = max(1, position // 4)
        read = cached_upto // 4
        write = (marks[-1][0] // 4 - read) if marks and marks[-1][0] > cached_upto else 0
        self._cache.update(key for _, key in marks)
        return {"input_tokens": total - read - write, "output_tokens": output_tokens,
                "cache_creation_input_tokens": write, "cache_read_input_tokens": read}

    def _make_handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, kind: str, message: str) -> None:
                self._send(status, {"type": "error", "error": {"type": kind, "message": message}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                try:
                    request = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    return self._error(400, "invalid_request_error", "request body is not JSON")
                if self.path.rstrip("/") != "/v1/messages":
                    return self._error(404, "not_found_error", f"no route {self.path}")
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server._lock:
                    server.requests.append(request)
                    try:
                        validate_request(request, headers)
                    except InvalidRequest as e:
                        server.invalid.append(str(e))
                        return self._error(400 if "x-api-key" not in str(e) else 401,
                                           "invalid_request_error" if "x-api-key" not in str(e) else "authentication_error", str(e))
                reply = server._handler(request)
                if reply.status != 200:
                    return self._error(reply.status, reply.error_type, reply.error_message)
                content = ([{"type": "text", "text": reply.text}] if reply.text else []) + list(reply.tool_uses)
                with server._lock:
                    usage = server.usage(request, reply.output_tokens)
                    server.usages.append(usage)
                self._send(200, {
                    "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
                    "model": request["model"], "content": content,
                    "stop_reason": "tool_use" if reply.tool_uses else "end_turn", "stop_sequence": None,
                    "usage": usage,
                })

        return Handler
