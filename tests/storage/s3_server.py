"""A real S3 API on loopback for tests: moto's server in its own process, one request at a time.

S3 applies a conditional write (``If-None-Match: *``, ``If-Match``) atomically. moto checks the condition and
then writes, so its default threaded server could let two racing requests both pass; serving one request at a
time restores the atomicity the lock relies on. Run as ``python -m tests.storage.s3_server PORT``.

The ``s3_endpoint`` fixture starts it once per session, creates a bucket and sets ``AWS_ENDPOINT_URL`` and test
credentials in ``os.environ``, so this process and every child it starts (``nearid generate``, writer scripts)
reach the server through the ordinary botocore configuration.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[2]
BUCKET = "nearid-test"
START_TIMEOUT_S = 60.0
TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class S3Endpoint:
    """The running server: its URL, the test bucket and the environment that points clients at it."""

    url: str
    bucket: str
    env: dict[str, str]


def serve(port: int) -> None:
    """Serve moto's S3 on 127.0.0.1:``port``, single-threaded, until killed."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", port, app, threaded=False, request_handler=MotoRequestHandler)
    server.serve_forever()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_listening(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server not listening on port {port} after {START_TIMEOUT_S:.0f}s")


def _clear_s3_clients() -> None:
    """Forget cached S3 filesystems, whose clients were configured with an older environment."""
    from s3fs import S3FileSystem

    S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """moto's S3 server on a free loopback port, with a bucket, for the whole session."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.storage.s3_server", str(port)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    saved = {key: os.environ.get(key) for key in [*TEST_ENV, "AWS_ENDPOINT_URL"]}
    try:
        _wait_until_listening(proc, port, log)
        url = f"http://127.0.0.1:{port}"
        env = {**TEST_ENV, "AWS_ENDPOINT_URL": url}
        os.environ.update(env)
        _clear_s3_clients()
        import fsspec

        fsspec.filesystem("s3").mkdir(BUCKET)
        yield S3Endpoint(url=url, bucket=BUCKET, env=env)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _clear_s3_clients()


@pytest.fixture
def s3_root(s3_endpoint: S3Endpoint) -> str:
    """A fresh, empty dataset root on the test bucket."""
    return f"s3://{s3_endpoint.bucket}/{uuid.uuid4().hex[:12]}/data"


if __name__ == "__main__":
    serve(int(sys.argv[1]))
