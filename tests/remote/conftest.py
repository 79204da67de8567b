"""A real, throw-away PostgreSQL server for the remote-evaluation tests.

One server per pytest process (each xdist worker starts its own: no port or lock is
shared, the server listens only on a unix socket in its own temp dir), started with the
machine's ``initdb``/``pg_ctl`` (Debian's ``postgresql`` package: ``/usr/lib/postgresql/
<major>/bin``, or on the PATH) and stopped at the end of the session. As root the server
runs as the ``postgres`` user (PostgreSQL refuses to run as root). Each test gets a
database of its own (:func:`dsn`). The server itself is :mod:`ckptcompat.remote.pgserver`'s
(the matrix's remote phase starts one the same way).

Without the binaries the tests skip and say why, unless ``CKPTCOMPAT_REQUIRE_PG=1`` (CI's
``.ci/run`` sets it after installing the package), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from ckptcompat.remote.pgserver import REQUIRE_ENV, PgServer, unavailable_reason


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires a server", pytrace=False)
    pytest.skip(f"{reason} (apt-get install postgresql; {REQUIRE_ENV}=1 makes this a failure)")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server of this pytest process, on a unix socket in a temp dir."""
    reason = unavailable_reason()
    if reason is not None:
        _unavailable(reason)
    server = PgServer()
    try:
        server.start()
    except Exception:
        server.remove()
        raise
    yield server
    server.remove()


@pytest.fixture
def dsn(pg_server: PgServer) -> str:
    """A fresh, empty database of the session's server: its libpq connection string."""
    return pg_server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def own_pg() -> Iterator[PgServer]:
    """A server of this test alone, which it may stop and start again (same socket, same
    data): for the tests of a database that goes away."""
    reason = unavailable_reason()
    if reason is not None:
        _unavailable(reason)
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()
