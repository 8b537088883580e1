"""A local HTTP front: turns requests on 127.0.0.1 into API Gateway HTTP API (v2) events.

It plays API Gateway's part for the local stack — route a request to the function that owns
it, hand it the event shape Lambda would get, and turn the answer back into HTTP. Each
function gets one request at a time, as one Lambda container would.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
BODY_TIMEOUT_SECONDS = 10

log = logging.getLogger(__name__)


class LocalContext:
    """The parts of the Lambda context object that Powertools reads."""

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.memory_limit_in_mb = 1024
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + 30

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def http_api_event(method: str, path: str, query: str, headers: dict[str, str], body: bytes, source_ip: str) -> dict:
    text_body, is_text = None, True
    if body:
        try:
            text_body = body.decode("utf-8")
        except UnicodeDecodeError:
            is_text = False
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {k.lower(): v for k, v in headers.items()},
        **({"queryStringParameters": dict(parse_qsl(query, keep_blank_values=True))} if query else {}),
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": "127.0.0.1",
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("User-Agent", ""),
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        **({"body": text_body if is_text else base64.b64encode(body).decode()} if body else {}),
        "isBase64Encoded": bool(body) and not is_text,
    }


class HttpFront:
    def __init__(self, routes: list[tuple[str, Callable[[str], bool], Handler]], port: int = 0) -> None:
        """``routes``: (function name, does-this-path-belong-to-it, handler), checked in order."""
        self.routes = [(name, owns, handler, threading.Lock()) for name, owns, handler in routes]
        front = self

        class RequestHandler(BaseHTTPRequestHandler):
            timeout = BODY_TIMEOUT_SECONDS  # socket timeout: a client that stops sending is dropped

            def _serve(self) -> None:
                front.serve(self)

            def __getattr__(self, name: str) -> Any:
                # Every method (QUERY and TRACE too) reaches the routing, as at API Gateway,
                # which answers 404 where no route matches; http.server would answer 501.
                if name.startswith("do_"):
                    return self._serve
                raise AttributeError(name)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # the functions log every request themselves

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # the listen backlog; 5 (the default) resets bursts of clients

        self.server = Server(("127.0.0.1", port), RequestHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="http-front", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HttpFront:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        """Answer one request, always: a bad length or a slow body is 400/408, a failing function 500."""
        split = urlsplit(request.path)
        raw_length = request.headers.get("Content-Length") or "0"
        if not raw_length.isdigit() or int(raw_length) > MAX_BODY_BYTES:
            expected = f"a Content-Length from 0 to {MAX_BODY_BYTES}"
            self._answer(request, _error(400, "invalid_request", f"expected {expected} (got: {raw_length[:20]!r})"))
            return
        body = _read_body(request, int(raw_length))
        if len(body) < int(raw_length):
            message = f"expected {raw_length} bytes of body within {BODY_TIMEOUT_SECONDS} s (got: {len(body)})"
            self._answer(request, _error(408, "request_timeout", message))
            return
        for name, owns, handler, lock in self.routes:
            if owns(split.path):
                event = http_api_event(
                    request.command,
                    split.path,
                    split.query,
                    dict(request.headers.items()),
                    body,
                    request.client_address[0],
                )
                try:
                    with lock:  # one request at a time per function, like one Lambda container
                        response = handler(event, LocalContext(name))
                except Exception:  # API Gateway answers a failed invocation with a 500, not silence
                    log.exception("function %s failed", name)
                    response = _error(500, "internal_error", f"the {name} function failed; its log says why")
                break
        else:
            response = _error(404, "unknown_route", f"no function serves {split.path}")
        self._answer(request, response)

    @staticmethod
    def _answer(request: BaseHTTPRequestHandler, response: dict[str, Any]) -> None:
        payload = response.get("body") or ""
        data = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode("utf-8")
        request.send_response(int(response.get("statusCode", 200)))
        for key, value in (response.get("headers") or {}).items():
            request.send_header(key, str(value))
        request.send_header("Content-Length", str(len(data)))
        if int(response.get("statusCode", 200)) in (400, 408):
            request.send_header("Connection", "close")  # what is left of the body cannot be trusted
            request.close_connection = True
        request.end_headers()
        request.wfile.write(data)


def _read_body(request: BaseHTTPRequestHandler, length: int) -> bytes:
    """Up to ``length`` bytes, within BODY_TIMEOUT_SECONDS in all (a trickling client is cut off too)."""
    deadline = time.monotonic() + BODY_TIMEOUT_SECONDS
    body = bytearray()
    try:
        while len(body) < length and time.monotonic() < deadline:
            chunk = request.rfile.read1(length - len(body))  # type: ignore[attr-defined]
            if not chunk:
                break
            body += chunk
    except TimeoutError:
        pass
    return bytes(body)


def _error(status: int, code: str, message: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"error": {"code": code, "message": message}}),
    }
