"""A real, throw-away PostgreSQL server for the remote-evaluation tests.

One server per pytest process (each xdist worker starts its own: no port or lock is
shared, the server listens only on a unix socket in its own temp dir), started with the
machine's ``initdb``/``pg_ctl`` (Debian's ``postgresql`` package: ``/usr/lib/postgresql/
<major>/bin``, or on the PATH) and stopped at the end of the session. As root the server
runs as the ``postgres`` user (PostgreSQL refuses to run as root). Each test gets a
database of its own (:func:`dsn`).

Without the binaries the tests skip and say why, unless ``CKPTCOMPAT_REQUIRE_PG=1`` (CI's
``.ci/run`` sets it after installing the package), which turns the skip into a failure.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRE_ENV = "CKPTCOMPAT_REQUIRE_PG"


def _bin_dir() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires a server", pytrace=False)
    pytest.skip(f"{reason} (apt-get install postgresql; {REQUIRE_ENV}=1 makes this a failure)")


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


class _Server:
    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        # Not under pytest's basetemp: that is root's 0700 dir, closed to the postgres user;
        # and short, since a unix socket path has at most 107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="ckpt-pg-"))
        self.data = self.root / "data"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *command: str) -> None:
        completed = subprocess.run(
            _as_server_user([str(self.bin_dir / command[0]), *command[1:]]),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if completed.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} exited {completed.returncode}: "
                f"{completed.stdout}{completed.stderr}{tail}"
            )

    def start(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        options = f"-k {self.root} -c listen_addresses='' -c fsync=off -c max_connections=200"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.root} dbname={dbname} user=postgres"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[_Server]:
    """A PostgreSQL server of this pytest process, on a unix socket in a temp dir."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        _unavailable("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root, and there is no postgres user to run the server")
    try:
        import psycopg  # noqa: F401
    except ModuleNotFoundError:
        _unavailable("psycopg is not installed (ckptcompat's remote extra)")
    server = _Server(bin_dir)
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture
def dsn(pg_server: _Server) -> str:
    """A fresh, empty database of the session's server: its libpq connection string."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg_server.dsn(name)
