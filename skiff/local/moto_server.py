"""A moto server on 127.0.0.1 that applies one AWS request at a time.

Real AWS applies each call atomically (a DynamoDB transaction either happens whole or not
at all, as seen by every other caller). moto's in-memory backends are not thread-safe: two
simultaneous transactions can interleave inside moto and corrupt its state. Serializing the
backend behind a lock restores the atomicity AWS gives, while clients still connect and
race each other exactly as they would against AWS.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server


class MotoServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host, self._port = host, port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        if self._server is None:
            raise RuntimeError("expected a started server (got: not started); call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> MotoServer:
        from moto.moto_api._internal.models import moto_api_backend
        from moto.moto_server.threaded_moto_server import MotoRequestHandler
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        moto_api_backend.reset()  # moto's backends are process-global: a new server starts empty
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per AWS call otherwise
        moto_app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def one_at_a_time(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            with lock:
                return list(moto_app(environ, start_response))

        self._server = make_server(
            self._host, self._port, one_at_a_time, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
