"""The local HTTP front answers every request, as API Gateway would: never a closed socket."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from skiff.local import http_front
from skiff.local.http_front import HttpFront


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(event.get("body"))}


def broken(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise RuntimeError("the function crashed")


@pytest.fixture
def front(monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpFront]:
    monkeypatch.setattr(http_front, "BODY_TIMEOUT_SECONDS", 1)
    server = HttpFront([("broken", lambda p: p == "/broken", broken), ("echo", lambda p: True, echo)]).start()
    yield server
    server.stop()


def raw(front: HttpFront, request: bytes) -> bytes:
    host, port = front.server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(request)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_failing_function_is_a_500_with_the_error_format(front: HttpFront) -> None:
    host, port = front.server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request("POST", "/broken", body=b"{}", headers={"content-type": "application/json"})
    response = connection.getresponse()
    assert response.status == 500
    assert json.loads(response.read())["error"]["code"] == "internal_error"


@pytest.mark.parametrize("length", [b"-5", b"abc"])
def test_a_bad_content_length_is_a_400(front: HttpFront, length: bytes) -> None:
    answer = raw(front, b"POST /x HTTP/1.1\r\nHost: local\r\nContent-Length: " + length + b"\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer[:80]
    assert b"expected a Content-Length from 0 to" in answer


def test_a_body_shorter_than_its_content_length_is_a_408_after_the_timeout(front: HttpFront) -> None:
    answer = raw(front, b"POST /x HTTP/1.1\r\nHost: local\r\nContent-Length: 100\r\n\r\n{}")
    assert b" 408 " in answer.split(b"\r\n", 1)[0], answer[:80]
    assert b"expected 100 bytes of body within 1 s (got: 2)" in answer


def test_fifty_concurrent_clients_are_all_answered(front: HttpFront) -> None:
    host, port = front.server.server_address[:2]
    statuses: list[int] = []
    start = threading.Barrier(50)

    def client(i: int) -> None:
        start.wait()
        connection = http.client.HTTPConnection(host, port, timeout=20)
        connection.request("POST", "/x", body=json.dumps({"i": i}), headers={"content-type": "application/json"})
        statuses.append(connection.getresponse().status)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 50
