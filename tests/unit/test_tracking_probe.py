"""A tracking server that is down stops a stage at once, in one line, before its run opens.

Without the probe the MLflow client retries for minutes (exponential backoff) and the stage
ends in chained tracebacks; these tests pin the fast path and that a live server is never
mistaken for a dead one.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from lmops.config import LmopsError, Params
from lmops.tracking.runs import check_tracking_server, redact_uri, stage_run


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def answering_server() -> Iterator[str]:
    """An HTTP server on loopback that answers every request 404, like a proxy path might."""

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:  # keep the test output clean
            pass

    server = HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_stage_on_a_closed_port_fails_in_one_line_before_its_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    body_ran = False
    start = time.monotonic()
    with pytest.raises(LmopsError) as err, stage_run("clean", Params(), root=tmp_path):
        body_ran = True
    assert time.monotonic() - start < 10  # not minutes of client retries
    assert not body_ran
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert f"127.0.0.1:{port} is unreachable (Connection refused)" in message
    assert "MLFLOW_TRACKING_URI" in message


def test_any_http_answer_counts_as_reachable(answering_server: str) -> None:
    check_tracking_server(answering_server)  # 404 on /health: up, just not plain MLflow


def test_a_server_that_accepts_but_never_answers_times_out() -> None:
    with socket.socket() as sock:  # listening: the kernel completes connects, nobody answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with pytest.raises(LmopsError, match="no answer to /health within the timeout"):
            check_tracking_server(uri, timeout=(2.0, 0.3))


def test_database_and_file_stores_are_not_probed() -> None:
    check_tracking_server("sqlite:////nonexistent/mlflow.db")
    check_tracking_server(f"postgresql://u@127.0.0.1:{closed_port()}/db")
    check_tracking_server("file:///nonexistent")


def test_the_error_line_never_shows_a_password() -> None:
    uri = f"http://alice:s3cr3t-xyz@127.0.0.1:{closed_port()}"
    with pytest.raises(LmopsError) as err:
        check_tracking_server(uri)
    assert "s3cr3t-xyz" not in str(err.value) and "alice:***@" in str(err.value)
    assert redact_uri("https://host:8443/path") == "https://host:8443/path"
    assert redact_uri("https://bob:pw@host:8443/p?q=1") == "https://bob:***@host:8443/p?q=1"
