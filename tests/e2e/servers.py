"""Real tracking infrastructure for end-to-end tests: a throw-away PostgreSQL cluster and an
``mlflow server`` on loopback, each started on a free port and torn down with everything it wrote.

PostgreSQL refuses to run as root; under root (containers, CI) the cluster is created and run
as the ``postgres`` user the Debian package creates, in a temp folder that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import requests

from .project import env

SERVER_START_TIMEOUT_S = 240  # schema migrations on a fresh PostgreSQL database take ~25 s here


def free_port() -> int:
    """A loopback port free right now (bound, then released: good enough for one test run)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` (Debian layout), else ``pg_ctl``'s folder
    on the PATH; ``None`` when PostgreSQL is not installed."""
    found = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "pg_ctl").exists()]
    if found:
        return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


def _as_postgres_user() -> list[str]:
    """The command prefix that runs PostgreSQL's tools as a non-root user (empty when not root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user (PostgreSQL refuses root)")
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root without runuser (PostgreSQL refuses root)")
    return [runuser, "-u", "postgres", "--"]


@contextmanager
def postgres_database(name: str = "mlflow") -> Iterator[str]:
    """A fresh PostgreSQL cluster on 127.0.0.1 holding database ``name``; yields its SQLAlchemy
    URI. The cluster is stopped and its folder deleted afterwards."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    prefix = _as_postgres_user()
    base = Path(tempfile.mkdtemp(prefix="lmops-pg-"))  # not tmp_path: root-only, 0700 parents
    if prefix:
        shutil.chown(base, user="postgres")
    data, port = base / "data", free_port()

    def pg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=120, check=True
        )

    try:
        pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "lmops", "--auth=trust", "-E", "UTF8",
           "--no-sync")  # fmt: skip
        # loopback only, the unix socket in our folder (the default one is root's), no fsync:
        # a throw-away cluster
        options = f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c full_page_writes=off"
        pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "postgres.log"), "-w",
           "-t", "60", "-o", options, "start")  # fmt: skip
        try:
            pg(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "lmops", name)
            yield f"postgresql+psycopg2://lmops@127.0.0.1:{port}/{name}"
        finally:
            pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    except subprocess.CalledProcessError as exc:
        log = base / "postgres.log"
        raise AssertionError(
            f"{exc.cmd} failed:\n{exc.stdout}\n{exc.stderr}\n"
            + (log.read_text()[-3000:] if log.exists() else "")
        ) from None
    finally:
        shutil.rmtree(base, ignore_errors=True)


def pg_dump(uri: str) -> str:
    """The whole database at ``uri`` as SQL text (to search every field a store wrote)."""
    bin_dir = postgres_bin()
    assert bin_dir is not None
    libpq_uri = uri.replace("postgresql+psycopg2://", "postgresql://")
    return subprocess.run(
        [str(bin_dir / "pg_dump"), "--data-only", libpq_uri],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout


@contextmanager
def mlflow_server(backend_store_uri: str, artifacts: Path, log: Path) -> Iterator[str]:
    """``mlflow server`` on a free loopback port with ``--serve-artifacts`` into ``artifacts``;
    yields its ``http://`` URI once ``/health`` answers; stopped (its whole process group)
    afterwards."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri,
        "--serve-artifacts", "--artifacts-destination", str(artifacts),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    server_env = env()
    server_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job runner process
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, env=server_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"mlflow server exited {proc.returncode}:\n{_tail(log)}")
            try:
                if requests.get(f"{uri}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"mlflow server did not answer /health:\n{_tail(log)}")
            time.sleep(0.5)
        yield uri
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (mlflow server runs uvicorn as a child), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
    # the group may outlive its leader: make sure no child keeps the port
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


@contextmanager
def http_processes(
    commands: dict[str, list[str]],
    probe: str,
    logs: Path,
    process_env: dict[str, str],
    cwd: Path,
    timeout_s: float = SERVER_START_TIMEOUT_S,
) -> Iterator[dict[str, str]]:
    """Start every command at once, each on its own free loopback port (``{port}`` in its
    arguments); yield ``{name: "http://127.0.0.1:<port>"}`` once each answers ``probe`` with 200.
    Started together because each spends seconds importing before it listens; every process
    group is stopped afterwards and a failed start shows its log."""
    procs: dict[str, tuple[subprocess.Popen[bytes], str, Path]] = {}
    try:
        for name, cmd in commands.items():
            port = str(free_port())
            log = logs / f"{name}.log"
            with open(log, "w") as out:
                proc = subprocess.Popen(
                    [arg.replace("{port}", port) for arg in cmd],
                    env=process_env,
                    cwd=cwd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            procs[name] = (proc, f"http://127.0.0.1:{port}", log)
        deadline = time.monotonic() + timeout_s
        for name, (proc, url, log) in procs.items():
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited {proc.returncode}:\n{_tail(log)}")
                with suppress(requests.RequestException):
                    if requests.get(f"{url}{probe}", timeout=2).ok:
                        break
                if time.monotonic() > deadline:
                    raise AssertionError(f"{name} did not answer {probe}:\n{_tail(log)}")
                time.sleep(0.25)
        yield {name: url for name, (_, url, _) in procs.items()}
    finally:
        for proc, _, _ in procs.values():
            _stop_group(proc)
