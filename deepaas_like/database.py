"""The server's own state: one store, SQLite by default or PostgreSQL, one thread for SQL.

Jobs, the registry's models and versions, tokens, users, roles and the audit log are the
tables of :mod:`deepaas_like.tables`. The store is chosen by URL (``--store``): empty
means ``<data-dir>/state.sqlite3``, or ``postgresql://user@host/db`` for a database that
several replicas share. Every :meth:`Database.run` is one transaction (on SQLite with a
WAL journal): a server killed at any moment leaves a consistent store. All SQL runs on
one dedicated thread, so the event loop never waits on the disk or the network, and
writes happen in the order they were asked for.

Opening locks the data directory (one server per directory) and brings the schema up to
date with Alembic (:mod:`deepaas_like.migrations`), one step at a time; a store written
by a newer server is refused with a clear error::

    db = Database("/var/lib/deepaas_like")          # or Database(dir, url="postgresql://...")
    await db.open()
    rows = await db.run(lambda conn: conn.execute(sa.select(tables.jobs.c.id)).all())
    await db.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import logging
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from . import tables
from .errors import ConfigurationError, DeepaasError
from .files import private_dir, private_file
from .settings import is_shared_store

if TYPE_CHECKING:  # each dialect is imported when a store uses it; Alembic when a store is migrated
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy.dialects import postgresql, sqlite

T = TypeVar("T")
FILENAME = "state.sqlite3"
OLD_FILENAME = "jobs.sqlite3"  # before the registry, the database held only jobs
MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"  # where Alembic records a store's schema revision
MIGRATION_LOCK = 0x64656570  # PostgreSQL advisory lock held while a server checks and migrates the schema
LOG = logging.getLogger(__name__)
_ALEMBIC = threading.Lock()


class DataDirInUse(ConfigurationError):
    pass


class StoreTooNew(ConfigurationError):
    """The store was written by a newer deepaas_like."""


class StoreUnavailable(ConfigurationError):
    """The store's URL is wrong, or its server cannot be reached (at start: --store)."""


OUTAGE_RETRY_AFTER = 2  # seconds a client is told to wait while the store cannot be reached


class StoreOutage(DeepaasError):
    """The store could not be reached for a request (503 with Retry-After). The driver's own
    words (host, port, database) are logged, never answered."""

    status = 503

    def __init__(self) -> None:
        super().__init__(
            "The server's store cannot be reached right now; retry shortly",
            headers={"Retry-After": str(OUTAGE_RETRY_AFTER)},
        )


def _current_revision(conn: sa.Connection) -> str | None:
    """The store's schema revision as Alembic records it (None: no record)."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
    return str(rows[0][0]) if len(rows) == 1 else None


def _create(conn: sa.Connection) -> None:
    """Make an empty store what running every migration makes: the tables of
    :mod:`deepaas_like.tables`, the rows the migrations write, Alembic's record of
    :data:`HEAD`; without importing Alembic (a first start's 0.27 s). A test compares both
    ways, table by table, on SQLite and on PostgreSQL."""
    tables.metadata.create_all(conn)
    conn.execute(sa.insert(tables.meta), [{"key": "revision", "value": "0"}])  # 0004_revision
    record = sa.Table(
        VERSION_TABLE,
        sa.MetaData(),
        sa.Column("version_num", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),  # as Alembic names it
    )
    record.create(conn)
    conn.execute(sa.insert(record), [{"version_num": HEAD}])


# The driver's errors that say the store is away (a lost or refused connection, a database
# shutting down, a lock): what a retry may cure.
OUTAGE_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError)


def _alembic_config(connection: sa.Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _head_revision() -> str:
    """The newest migration's revision, read from the migration files (importing Alembic,
    12 MiB, only when a store must be migrated): the one no other names as its
    ``down_revision``. A unit test checks it is Alembic's head."""
    steps: dict[str, str | None] = {}
    for path in sorted((MIGRATIONS / "versions").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        revision = re.search(r'^revision = "([^"]+)"', text, re.MULTILINE)
        down = re.search(r'^down_revision = (?:"([^"]+)"|None)', text, re.MULTILINE)
        if revision is not None and down is not None:
            steps[revision.group(1)] = down.group(1)
    heads = set(steps) - set(steps.values())
    if len(heads) != 1:
        raise RuntimeError(f"the migrations in {MIGRATIONS} have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


HEAD = _head_revision()
"""The schema revision this code writes."""


def describe_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(malformed store URL)"


class Database:
    """The server's store, opened by one server (per data directory), used from one thread."""

    def __init__(self, data_dir: str | os.PathLike[str], *, url: str = "", exclusive: bool = True) -> None:
        """``url``: the store (empty: ``<data_dir>/state.sqlite3``). ``exclusive``: lock the
        data directory (the server); tools that only read or make a small change while the
        server may run (``deepaas-token``) open it shared."""
        self.exclusive = exclusive
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / FILENAME
        self.url = url or f"sqlite:///{self.path}"
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepaas-like-db")
        self._engine: sa.Engine | None = None
        self._lock_fd: int | None = None
        self._seen: Any = None
        self.outage_since: float | None = None  # monotonic time of the first failure of an ongoing outage

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return sa.engine.make_url(self.url).get_backend_name()

    @property
    def shared(self) -> bool:
        """Whether other servers may use this store at the same time (replicas on PostgreSQL)."""
        return is_shared_store(self.url)

    def __str__(self) -> str:
        return str(self.path) if self.dialect == "sqlite" else describe_url(self.url)

    # --- life cycle --------------------------------------------------------------

    async def open(self) -> None:
        """Lock the data directory, then create, migrate or open the store."""
        await self._in_thread(self._open)

    async def close(self) -> None:
        def close() -> None:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
            self._unlock()

        await self._in_thread(close)
        self._executor.shutdown(wait=True)

    async def run(self, fn: Callable[[sa.Connection], T]) -> T:
        """``fn(connection)`` in one transaction on the database thread; its return value."""

        def call() -> T:
            assert self._engine is not None, "the database is not open"
            with self._engine.begin() as conn:
                return fn(conn)

        try:
            result = await self._in_thread(call)
        except OUTAGE_ERRORS as exc:
            self._outage(exc)
            raise StoreOutage() from exc
        if self.outage_since is not None:
            LOG.warning("the store %s answers again after %.1f s", self, time.monotonic() - self.outage_since)
            self.outage_since = None
        return result

    def _outage(self, exc: Exception) -> None:
        """Log the first failure of an outage with the driver's words (once, not per request)."""
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            LOG.error("the store %s cannot be reached: %s", self, str(getattr(exc, "orig", exc)).strip()[:500])

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # --- opening ------------------------------------------------------------------

    def _lock(self) -> None:
        private_dir(self.data_dir)
        fd = os.open(self.data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise DataDirInUse(
                f"--data-dir {self.data_dir} is in use by another deepaas-run (pid {holder}); "
                "give this server its own --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _open(self) -> None:
        if self.exclusive:
            self._lock()
        else:
            private_dir(self.data_dir)
        try:
            engine = self._create_engine()
            try:
                with engine.begin() as conn:
                    if conn.dialect.name == "postgresql":  # replicas starting together: one migrates at a time
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
                    self._migrate(conn)
            except sa.exc.OperationalError as exc:
                engine.dispose()
                raise StoreUnavailable(
                    f"--store {self}: cannot open it: {str(exc.orig).strip()}; check the URL, "
                    "and that the database server runs and takes connections"
                ) from None
            except BaseException:
                engine.dispose()
                raise
        except BaseException:
            self._unlock()
            raise
        self._engine = engine

    def _create_engine(self) -> sa.Engine:
        try:
            url = sa.engine.make_url(self.url)
        except sa.exc.ArgumentError:
            raise StoreUnavailable(
                f"--store {self.url!r} is not a database URL; give sqlite:///PATH or postgresql://USER@HOST/DATABASE"
            ) from None
        backend = url.get_backend_name()
        if backend == "sqlite":
            self._adopt_old_file()
            if url.database and url.database != ":memory:":  # the store is the server's alone: 0600
                private_file(url.database)
            # one connection, used only by the database thread; transactions begun by us
            engine = sa.create_engine(
                url, poolclass=StaticPool, connect_args={"check_same_thread": False, "timeout": 10}
            )
            sa.event.listen(engine, "connect", _sqlite_connected)
            sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
            return engine
        if backend == "postgresql":
            if url.drivername == "postgresql":
                url = url.set(drivername="postgresql+psycopg")  # psycopg 3, not the older psycopg2
            try:
                return sa.create_engine(url, pool_size=2, pool_pre_ping=True)
            except ModuleNotFoundError as exc:
                raise StoreUnavailable(
                    f"a PostgreSQL store needs {exc.name}: pip install 'deepaas_like[postgresql]'"
                ) from None
        raise StoreUnavailable(f"unsupported store {backend!r}: give sqlite:///PATH or postgresql://...")

    def _adopt_old_file(self) -> None:
        """A data directory of a server from before the registry: its jobs.sqlite3 becomes ours."""
        old = self.data_dir / OLD_FILENAME
        if self.url == f"sqlite:///{self.path}" and old.exists() and not self.path.exists():
            for suffix in ("-wal", "-shm", ""):  # the database file last: it marks the move done
                part = Path(str(old) + suffix)
                if part.exists():
                    os.replace(part, Path(str(self.path) + suffix))

    def _migrate(self, conn: sa.Connection) -> None:
        """Bring the schema up to :data:`HEAD`, one step at a time."""
        with _ALEMBIC:  # Alembic's context is global to the process: one migration at a time in it
            self._migrate_locked(conn)

    def _migrate_locked(self, conn: sa.Connection) -> None:
        if _current_revision(conn) == HEAD:
            return  # the usual start: nothing to do, and Alembic not imported
        if not sa.inspect(conn).get_table_names():
            LOG.info("store %s: a new store, created at schema revision %s", self, HEAD)
            return _create(conn)
        from alembic import command
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory
        from alembic.util.exc import CommandError

        config = _alembic_config(conn)
        script = ScriptDirectory.from_config(config)
        current = MigrationContext.configure(conn).get_current_revision()
        if current is None:
            current = self._legacy_revision(conn, script)
            if current is not None:  # a store from before Alembic: its steps are ours, numbered alike
                command.stamp(config, current)
        else:
            try:
                script.get_revision(current)
            except CommandError:
                raise StoreTooNew(
                    f"the store {self} has schema revision {current}, newer than this deepaas_like "
                    f"understands ({HEAD}); run the newer deepaas_like, or give this one another store"
                ) from None
        if current != HEAD:
            LOG.info("store %s: migrating the schema from %s to %s", self, current or "nothing", HEAD)
            command.upgrade(config, "head")

    def _legacy_revision(self, conn: sa.Connection, script: ScriptDirectory) -> str | None:
        """The revision of a store whose ``meta`` table says ``schema_version`` (before Alembic)."""
        if not sa.inspect(conn).has_table("meta"):
            return None
        row = conn.execute(sa.select(tables.meta.c.value).where(tables.meta.c.key == "schema_version")).first()
        if row is None:
            return None
        number = int(row[0])
        by_number = {int(rev.revision.split("_")[0]): rev.revision for rev in script.walk_revisions()}
        if number not in by_number:
            raise StoreTooNew(
                f"the store {self} has schema version {number}, newer than this deepaas_like understands "
                f"({HEAD}); run the newer deepaas_like, or give this one another store"
            )
        conn.execute(sa.delete(tables.meta).where(tables.meta.c.key == "schema_version"))
        return by_number[number]

    # --- changes by other processes --------------------------------------------------

    async def changed_elsewhere(self) -> bool:
        """Whether tokens, users, roles or uploaded models may have changed since the last
        call (another process: ``deepaas-token``, or a replica on the same PostgreSQL)."""

        def check(conn: sa.Connection) -> bool:
            if conn.dialect.name == "sqlite":  # any commit by another connection
                seen = conn.exec_driver_sql("PRAGMA data_version").scalar()
            else:
                seen = conn.execute(sa.select(tables.meta.c.value).where(tables.meta.c.key == "revision")).scalar()
            changed, self._seen = seen != self._seen, seen
            return changed

        return await self.run(check)


def insert_for(conn: sa.Connection) -> Callable[[sa.Table], postgresql.Insert | sqlite.Insert]:
    """The dialect's INSERT, which knows ON CONFLICT (SQLite and PostgreSQL spell it alike)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def bump_revision(conn: sa.Connection) -> None:
    """Say, in the current transaction, that access facts changed (see :meth:`Database.changed_elsewhere`)."""
    meta = tables.meta
    conn.execute(
        sa.update(meta)
        .where(meta.c.key == "revision")
        .values(value=sa.cast(sa.cast(meta.c.value, sa.Integer) + 1, sa.Text))
    )


def _sqlite_connected(dbapi_connection: sqlite3.Connection, record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event says BEGIN itself
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")
