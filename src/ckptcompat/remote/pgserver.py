"""A throw-away PostgreSQL server in a temp dir, for the tests and the matrix's remote phase.

Started with the machine's ``initdb``/``pg_ctl`` (Debian's ``postgresql`` package puts
them in ``/usr/lib/postgresql/<major>/bin``; or on the PATH), as pytest-postgresql does:
the server listens only on a unix socket in its own temp dir (no TCP port, nothing shared
between servers), ``fsync=off`` (its data is thrown away). As root it runs as the
``postgres`` user: PostgreSQL refuses to run as root. Standard library only.

:meth:`PgServer.stop` and :meth:`PgServer.start` may be called again on one server: it
comes back on the same socket with the same data (what the tests of a stopped database
need); :meth:`PgServer.remove` stops it and deletes its directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["REQUIRE_ENV", "PgServer", "PgServerError", "find_bin_dir", "unavailable_reason"]

#: ``CKPTCOMPAT_REQUIRE_PG=1`` (CI's ``.ci/run`` sets it): a missing server is a failure.
REQUIRE_ENV = "CKPTCOMPAT_REQUIRE_PG"


class PgServerError(RuntimeError):
    """``initdb`` or ``pg_ctl`` failed; the message holds their output and the log's tail."""


def find_bin_dir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: the PATH's, else the newest
    ``/usr/lib/postgresql/<major>/bin``; None when neither has them."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


def unavailable_reason() -> str | None:
    """Why no throw-away server can start here (None: one can): no binaries, root without
    a ``postgres`` user, or psycopg (the ``remote`` extra) not installed."""
    if find_bin_dir() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl) on this machine"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no postgres user to run the server"
    try:
        import psycopg  # noqa: F401
    except ModuleNotFoundError:
        return "psycopg is not installed (ckptcompat's remote extra)"
    return None


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


class PgServer:
    """One server on a unix socket in a fresh temp dir (``/tmp/ckpt-pg-*``).

    Args:
        bin_dir: where ``initdb`` and ``pg_ctl`` are (default :func:`find_bin_dir`).

    Raises:
        PgServerError: no binaries (``bin_dir`` None and none found).
    """

    def __init__(self, bin_dir: Path | None = None) -> None:
        found = bin_dir or find_bin_dir()
        if found is None:
            raise PgServerError("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
        self.bin_dir = found
        # Short (a unix socket path has at most 107 bytes), and not under a 0700 dir of
        # root's: the postgres user must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="ckpt-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *command: str, timeout_s: float = 120) -> None:
        completed = subprocess.run(
            _as_server_user([str(self.bin_dir / command[0]), *command[1:]]),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if completed.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PgServerError(
                f"{' '.join(command)} exited {completed.returncode}: "
                f"{completed.stdout}{completed.stderr}{tail}"
            )

    def start(self) -> None:
        """Create the cluster on first use, then start the server and wait until it
        accepts connections (at most 60 s).

        Raises:
            PgServerError: ``initdb`` or ``pg_ctl start`` failed.
        """
        if not (self.data / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                "--no-sync", "-E", "UTF8",
            )  # fmt: skip
        options = f"-k {self.root} -c listen_addresses='' -c fsync=off -c max_connections=200"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log),
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m MODE``: ``fast`` ends every session,
        ``immediate`` aborts like a crash) and wait until it is down; data is kept.

        Raises:
            PgServerError: ``pg_ctl stop`` failed (e.g. the server was not running).
        """
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        """Stop the server if it runs and delete its directory. Never raises."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        """The libpq connection string of database ``dbname`` on this server."""
        return f"host={self.root} dbname={dbname} user=postgres"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (a plain identifier) and return its :meth:`dsn`."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)
