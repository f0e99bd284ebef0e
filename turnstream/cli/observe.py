"""What `serve` and `worker` set up for their logs and metrics (docs/operations.md).

Logs: TURNSTREAM_LOG_FORMAT, text (the default) or json (turnstream/logs.py),
for `serve` and uvicorn's own lines alike, and for `worker`'s processes.

`turnstream worker`'s metrics: taskiq runs the runs in child processes
(`--workers N`), each with numbers of its own. With
TURNSTREAM_WORKER_METRICS_PORT set, the worker command points them all at one
directory (prometheus-client's multiprocess mode: PROMETHEUS_MULTIPROC_DIR, a
fresh temporary one unless it is set already) and serves their sum from the
parent process, at `http://HOST:PORT/metrics`. HOST is
TURNSTREAM_WORKER_METRICS_HOST, 127.0.0.1 by default: only this machine can
scrape it unless the operator opens it. With TURNSTREAM_METRICS_TOKEN set, a
scrape must also send it as a bearer token. prometheus-client decides at import
whether a process writes to the directory, so the variable is set here before
anything imports it; the children inherit it.
"""

from __future__ import annotations

import atexit
import hmac
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from turnstream import logs
from turnstream.cli.checks import fail, say
from turnstream.config import Settings

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"  # as turnstream.metrics, not imported here: see above


def serve_logs(settings: Settings, level: str) -> dict[str, Any] | None:
    """Set up `serve`'s log lines; return the `log_config` to give uvicorn.

    JSON: None, so that uvicorn's loggers (its access lines too) go to the root
    logger's JSON lines; text: uvicorn's own configuration, as without us.
    """
    logs.configure(settings.log_format, level)
    if settings.log_format == "json":
        return None
    from uvicorn.config import LOGGING_CONFIG

    return LOGGING_CONFIG


def prepare_worker(settings: Settings) -> None:
    """Before taskiq starts the worker processes: their log format, their metrics port."""
    if settings.log_format == "json":
        # Set up before taskiq's own (text) setup, which then leaves it; forked
        # processes inherit it. Level INFO, as taskiq's default.
        logs.configure("json", logging.INFO)
    expose_metrics(settings)


def expose_metrics(settings: Settings) -> None:
    """Serve the worker processes' metrics, if TURNSTREAM_WORKER_METRICS_PORT is set."""
    port = settings.worker_metrics_port
    if port is None:
        return
    directory = os.environ.get(MULTIPROC_DIR)
    if not directory:
        directory = tempfile.mkdtemp(prefix="turnstream-metrics-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        os.environ[MULTIPROC_DIR] = directory
    from prometheus_client import CollectorRegistry, make_wsgi_app
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    app = guarded(make_wsgi_app(registry), settings.metrics_token)
    host = settings.worker_metrics_host
    try:
        server = make_server(host, port, app, _Server, handler_class=_Quiet)
    except OSError as exc:
        raise fail(
            f"Cannot serve the worker metrics on {host}:{port} ({exc.strerror or exc}). "
            "Pick a free TURNSTREAM_WORKER_METRICS_PORT, or unset it."
        ) from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    say(f"Worker metrics: http://{host}:{port}/metrics")


def guarded(app: WSGIApplication, token: str | None) -> WSGIApplication:
    """`app`, answering 401 to a request without `Authorization: Bearer <token>` (if a token)."""
    if token is None:
        return app
    expected = f"Bearer {token}".encode()

    def check(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        given = str(environ.get("HTTP_AUTHORIZATION", "")).encode()
        if hmac.compare_digest(given, expected):
            return app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [("Content-Type", "application/json"), ("WWW-Authenticate", "Bearer")],
        )
        return [b'{"detail":"Send TURNSTREAM_METRICS_TOKEN as a bearer token."}']

    return check


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No line per scrape."""
