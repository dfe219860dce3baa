"""Conversation memory stores: SQLite (default, survives restarts), PostgreSQL (by DSN), or this process.

Each store keeps at most ``keep`` exchanges per session: appending prunes older ones in the same
transaction, so storage stays bounded no matter how long a session runs. Across sessions a
:class:`Retention` policy applies: sessions idle longer than ``idle_seconds`` are deleted, and past
``max_sessions`` the least recently used ones go; a store checks this at most every ``prune_seconds``,
when it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import operator
import queue
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from gorkheavy.config import AppConfig
from gorkheavy.core.redact import redact
from gorkheavy.core.types import Exchange

_T = TypeVar("_T")


class MemoryStoreError(Exception):
    """The memory store cannot be used; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How long and how many sessions a store keeps (0: no limit)."""

    max_sessions: int = 0
    idle_seconds: float = 0.0
    prune_seconds: float = 60.0

    def due(self, last: float, now: float) -> bool:
        return bool(self.max_sessions or self.idle_seconds) and now - last >= self.prune_seconds


class Store(Protocol):
    async def recent(self, session: str, limit: int) -> list[Exchange]: ...

    async def append(self, session: str, exchange: Exchange, keep: int) -> None: ...

    async def check(self) -> str: ...

    async def close(self) -> None: ...


class ProcessStore:
    """Memory in this process only (``memory.store: none``): nothing is written, a restart forgets."""

    def __init__(self, retention: Retention | None = None) -> None:
        # session -> (last write, its exchanges); least recently written first
        self._sessions: OrderedDict[str, tuple[float, deque[Exchange]]] = OrderedDict()
        self._retention = retention or Retention()
        self._pruned = time.time()

    async def recent(self, session: str, limit: int) -> list[Exchange]:
        entry = self._sessions.get(session)
        if entry is None or limit <= 0:
            return []
        return list(entry[1])[-limit:]

    async def append(self, session: str, exchange: Exchange, keep: int) -> None:
        now = time.time()
        _, items = self._sessions.pop(session, (now, deque()))
        items.append(exchange)
        while len(items) > max(keep, 0):
            items.popleft()
        if items:
            self._sessions[session] = (now, items)
        if self._retention.due(self._pruned, now):
            self._prune(now)

    def _prune(self, now: float) -> None:
        self._pruned = now
        idle = self._retention.idle_seconds
        while self._sessions:
            name, (last, _) = next(iter(self._sessions.items()))
            over = self._retention.max_sessions and len(self._sessions) > self._retention.max_sessions
            if not over and not (idle and now - last > idle):
                break
            del self._sessions[name]

    async def check(self) -> str:
        return "memory is kept in this process only (store: none)"

    async def close(self) -> None:
        self._sessions.clear()


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS exchanges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    created REAL NOT NULL,
    user_text TEXT NOT NULL,
    answer TEXT NOT NULL,
    winner TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS exchanges_by_session ON exchanges (session, id);
"""


# A batch's statements, one per chunk of sessions (``{rows}``: that many ``(?, ...)`` groups). Each does the
# whole chunk in one step of SQLite: the sqlite3 module lets other threads run while SQLite works and takes
# the interpreter back after every step, and while the event loop is busy each take waits up to the
# switch interval (5 ms), so a statement or a row per session made a burst's batch take seconds.
_SELECT_RECENT = """
WITH wanted(pos, session, lim) AS (VALUES {rows}),
ranked AS (
    SELECT w.pos, e.id, e.user_text, e.answer, e.winner, w.lim,
           row_number() OVER (PARTITION BY w.pos ORDER BY e.id DESC) AS n
    FROM wanted AS w JOIN exchanges AS e ON e.session = w.session
)
SELECT json_group_array(json_array(pos, id, user_text, answer, winner)) FROM ranked WHERE n <= lim
"""
_BY_POSITION_AND_ID = operator.itemgetter(0, 1)
_INSERT = "INSERT INTO exchanges (session, created, user_text, answer, winner) VALUES {rows}"
_KEEP_LAST = """
WITH kept(session, keep) AS (VALUES {rows})
DELETE FROM exchanges WHERE id IN (
    SELECT id FROM (
        SELECT e.id, k.keep, row_number() OVER (PARTITION BY e.session ORDER BY e.id DESC) AS n
        FROM kept AS k JOIN exchanges AS e ON e.session = k.session
    ) WHERE n > keep
)
"""


def _statements(sql: str, rows: Sequence[Sequence[Any]], max_params: int) -> Iterator[tuple[str, list[Any]]]:
    """``sql`` with its ``{rows}`` filled in for chunks of ``rows``, each within SQLite's parameter limit,
    and the parameters of each chunk."""
    width = len(rows[0]) if rows else 1
    per = max(1, max_params // width)
    group = "(" + ", ".join(["?"] * width) + ")"
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        yield sql.format(rows=", ".join([group] * len(chunk))), [value for row in chunk for value in row]


_Read = tuple[str, int, "asyncio.Future[list[Exchange]]"]
_Write = tuple[str, Exchange, int, "asyncio.Future[None]"]
_SQLITE_ERRORS = (sqlite3.Error, RuntimeError)  # RuntimeError: the store's thread is shut down


def _settle(outcomes: list[tuple[asyncio.Future[Any], object]]) -> None:
    """Each waiting operation's result, or its error (an exception); a caller that left is skipped."""
    for done, outcome in outcomes:
        if done.done():  # cancelled: its caller went away
            continue
        if isinstance(outcome, BaseException):
            done.set_exception(outcome)
        else:
            done.set_result(outcome)


def _resolve(done: asyncio.Future[_T], outcome: _T | BaseException, failed: bool) -> None:
    if done.done():  # cancelled: its caller went away
        return
    if failed:
        done.set_exception(cast(BaseException, outcome))
    else:
        done.set_result(cast(_T, outcome))


class _Worker:
    """A thread of its own that runs jobs one after another, in the order they were given.

    Jobs go to it through a ``queue.SimpleQueue``, whose ``put`` never waits. (A ThreadPoolExecutor's
    ``submit`` takes locks that its worker takes too, and from a busy event loop it was measured waiting
    for the worker: a good part of a millisecond per hop under a burst.)
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._open = True
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job()`` on the thread; it must not raise. RuntimeError once the thread is shut down."""
        if not self._open:
            raise RuntimeError("the store's thread is shut down")
        self._jobs.put(job)

    async def run(self, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)`` on the thread; its result or its error here."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[_T] = loop.create_future()

        def job() -> None:
            outcome: _T | BaseException
            try:
                outcome, failed = function(*args), False
            except BaseException as exc:  # whatever it raised is the caller's
                outcome, failed = exc, True
            with contextlib.suppress(RuntimeError):  # the event loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, done, outcome, failed)

        self.submit(job)
        return await done

    def shutdown(self) -> None:
        """No more jobs; the thread ends after the ones given."""
        if self._open:
            self._open = False
            self._jobs.put(None)


def _sqlite_connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # autocommit (transactions are explicit); used only on the store's own thread
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def _sqlite_setup(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=5000")
    connection.executescript(_SQLITE_SCHEMA)


class SqliteStore:
    """One SQLite connection on a thread of its own (WAL journal); reads and writes go there in batches.

    Whatever has queued up while the thread was busy goes in one hop: the reads of every request that
    arrived meanwhile (one SELECT for all of them, its rows returned as one JSON text), and the writes of
    every answer that finished meanwhile (one transaction: one INSERT of all, one DELETE that prunes every
    session, commit). So a burst of requests costs a few hops instead of one per read and four per write,
    a write does not wait behind hundreds of single reads, and a batch takes the interpreter back from a
    busy event loop a few times instead of once per row. A hop starts from the step of the caller that
    finds none under way and is settled by a callback from the thread, with no task in between: under a
    burst every round of the event loop takes long, and each task hop would cost one. A failed batch fails
    each of its operations.
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        thread: _Worker,
        path: Path,
        retention: Retention | None = None,
    ) -> None:
        self._db = connection
        self._thread = thread
        self._path = path
        self._reads: list[_Read] = []
        self._queued: list[_Write] = []
        self._hops: dict[str, asyncio.Future[None]] = {}  # "read" / "write": the batch on the thread now
        self._retention = retention or Retention()
        self._pruned = 0.0  # the first write prunes what a previous run left
        self._max_params = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)

    @classmethod
    async def open(cls, path: Path, retention: Retention | None = None) -> SqliteStore:
        thread = _Worker("gorkheavy-sqlite")
        try:
            connection = await thread.run(_sqlite_connect, path)
        except (OSError, sqlite3.Error) as exc:
            thread.shutdown()
            raise MemoryStoreError(
                f"cannot open the SQLite memory at {path} ({exc}); set memory.path to a writable file"
            ) from None
        try:
            await thread.run(_sqlite_setup, connection)
        except sqlite3.Error as exc:
            await thread.run(connection.close)
            thread.shutdown()
            raise MemoryStoreError(f"cannot use the SQLite memory at {path} ({exc})") from None
        return cls(connection, thread, path, retention)

    async def _run(self, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)`` on the store's thread."""
        return await self._thread.run(function, *args)

    def _hop(self, kind: str, work: Callable[[], _T], settle: Callable[[_T | Exception], None]) -> None:
        """``work()`` on the store's thread; ``settle`` gets its result or its error on the event loop,
        called straight from the thread's completion."""
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()
        self._hops[kind] = finished

        def back(outcome: _T | Exception) -> None:  # on the event loop
            del self._hops[kind]
            finished.set_result(None)
            settle(outcome)

        def run() -> None:  # on the store's thread
            outcome: _T | Exception
            try:
                outcome = work()
            except Exception as exc:  # whatever failed, the waiting callers hear of it
                outcome = exc
            with contextlib.suppress(RuntimeError):  # the event loop is closed: nobody waits
                loop.call_soon_threadsafe(back, outcome)

        try:
            self._thread.submit(run)
        except RuntimeError as exc:  # the store's thread is shut down
            back(exc)

    # -- reads -----------------------------------------------------------------------------------------------

    async def recent(self, session: str, limit: int) -> list[Exchange]:
        if limit <= 0:
            return []
        done: asyncio.Future[list[Exchange]] = asyncio.get_running_loop().create_future()
        self._reads.append((session, limit, done))
        if "read" not in self._hops:
            self._read_queued()
        return await done

    def _read_queued(self) -> None:
        """The reads queued so far, in one hop; those queued meanwhile go in the next."""
        batch, self._reads = self._reads, []
        wanted = [(session, limit) for session, limit, _ in batch]

        def settle(found: list[list[Exchange]] | Exception) -> None:
            if isinstance(found, Exception):
                error = MemoryStoreError(f"cannot read the SQLite memory at {self._path} ({found})")
                _settle([(done, error) for *_, done in batch])
            else:
                _settle([(done, exchanges) for (*_, done), exchanges in zip(batch, found, strict=True)])
            if self._reads:
                self._read_queued()

        self._hop("read", lambda: self._select(wanted), settle)

    def _select(self, wanted: list[tuple[str, int]]) -> list[list[Exchange]]:
        """On the store's thread: the last ``limit`` exchanges of each session, oldest first."""
        out: list[list[Exchange]] = [[] for _ in wanted]
        numbered = [(pos, session, limit) for pos, (session, limit) in enumerate(wanted)]
        for sql, params in _statements(_SELECT_RECENT, numbered, self._max_params):
            (found,) = self._db.execute(sql, params).fetchone()
            rows = json.loads(found)
            rows.sort(key=_BY_POSITION_AND_ID)  # by session, then oldest first
            for pos, _, user, answer, winner in rows:
                out[pos].append(Exchange(user, answer, winner))
        return out

    # -- writes ----------------------------------------------------------------------------------------------

    async def append(self, session: str, exchange: Exchange, keep: int) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((session, exchange, keep, done))
        if "write" not in self._hops:
            self._write_queued()
        await asyncio.shield(done)  # a caller that leaves does not take the group's write with it

    def _write_queued(self) -> None:
        """The writes queued so far, in one transaction (one hop); those queued meanwhile go in the next."""
        group, self._queued = self._queued, []
        now = time.time()
        prune = self._retention.due(self._pruned, now)
        if prune:
            self._pruned = now
        rows = [(s, now, e.user, e.answer, e.winner) for s, e, _, _ in group]
        keeps = {s: max(keep, 0) for s, _, keep, _ in group}

        def settle(outcome: Exception | None) -> None:
            if outcome is not None:
                error = MemoryStoreError(f"cannot write the SQLite memory at {self._path} ({outcome})")
                _settle([(done, error) for *_, done in group])
            else:
                _settle([(done, None) for *_, done in group])
            if self._queued:
                self._write_queued()

        self._hop("write", lambda: self._transaction(rows, keeps, now if prune else None), settle)

    def _transaction(
        self, rows: list[tuple[str, float, str, str, str]], keeps: dict[str, int], prune_at: float | None
    ) -> None:
        """On the store's thread: one transaction for a group of writes (and the retention prune when due)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in _statements(_INSERT, rows, self._max_params):  # in order: ids ascending
                db.execute(sql, params)
            for sql, params in _statements(_KEEP_LAST, list(keeps.items()), self._max_params):
                db.execute(sql, params)
            if prune_at is not None:
                self._prune(prune_at)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def _prune(self, now: float) -> None:
        if self._retention.idle_seconds:
            self._db.execute(
                "DELETE FROM exchanges WHERE session IN "
                "(SELECT session FROM exchanges GROUP BY session HAVING max(created) < ?)",
                (now - self._retention.idle_seconds,),
            )
        if self._retention.max_sessions:
            self._db.execute(
                "DELETE FROM exchanges WHERE session IN (SELECT session FROM exchanges GROUP BY session "
                "ORDER BY max(id) DESC LIMIT -1 OFFSET ?)",
                (self._retention.max_sessions,),
            )

    async def check(self) -> str:
        row = await self._run(lambda: self._db.execute("SELECT count(*) FROM exchanges").fetchone())
        count = row[0] if row else 0
        return f"SQLite memory at {self._path} ({count} stored exchanges)"

    async def close(self) -> None:
        while self._hops:  # the batches on the thread, and those queued meanwhile
            await asyncio.gather(*self._hops.values())
        with contextlib.suppress(*_SQLITE_ERRORS):
            await self._run(self._db.close)
        self._thread.shutdown()


_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS gorkheavy_exchanges (
    id BIGSERIAL PRIMARY KEY,
    session TEXT NOT NULL,
    created TIMESTAMPTZ NOT NULL DEFAULT now(),
    user_text TEXT NOT NULL,
    answer TEXT NOT NULL,
    winner TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS gorkheavy_exchanges_by_session ON gorkheavy_exchanges (session, id);
-- texts with U+0000 (which PostgreSQL text cannot hold) are stored JSON-escaped, flagged here
ALTER TABLE gorkheavy_exchanges ADD COLUMN IF NOT EXISTS escaped BOOLEAN NOT NULL DEFAULT false;
"""


def _pg_texts(exchange: Exchange) -> tuple[str, str, str, bool]:
    """(user, answer, winner, escaped): JSON-escaped when any holds a NUL, so nothing is lost."""
    texts = (exchange.user, exchange.answer, exchange.winner)
    if not any("\x00" in t for t in texts):
        return (*texts, False)
    user, answer, winner = (json.dumps(t) for t in texts)
    return user, answer, winner, True


def _pg_exchange(row: Any) -> Exchange:
    texts = (row["user_text"], row["answer"], row["winner"])
    if row["escaped"]:
        texts = tuple(json.loads(t) for t in texts)
    return Exchange(*texts)


class PostgresStore:
    """A small asyncpg pool; the table is created on first use."""

    def __init__(
        self,
        pool: Any,
        where: str,
        errors: tuple[type[BaseException], ...],
        retention: Retention | None = None,
    ) -> None:
        self._pool = pool
        self._where = where
        self._errors = errors
        self._retention = retention or Retention()
        self._pruned = 0.0

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        max_size: int = 10,
        connect_s: float = 10.0,
        retention: Retention | None = None,
    ) -> PostgresStore:
        try:
            import asyncpg  # noqa: PLC0415 - optional dependency, only needed for this store
        except ImportError:
            raise MemoryStoreError(
                "memory.store is postgresql but asyncpg is not installed; "
                "install the extra: pip install 'gorkheavy-lite[postgres]'"
            ) from None
        where = redact(dsn)
        try:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, timeout=connect_s)
            async with pool.acquire() as connection:
                await connection.execute("SELECT pg_advisory_lock(724105)")
                try:
                    await connection.execute(_PG_SCHEMA)
                finally:
                    await connection.execute("SELECT pg_advisory_unlock(724105)")
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise MemoryStoreError(
                f"cannot use the PostgreSQL memory at {where} ({redact(str(exc))}); check memory.dsn"
            ) from None
        errors = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
        return cls(pool, where, errors, retention)

    async def recent(self, session: str, limit: int) -> list[Exchange]:
        if limit <= 0:
            return []
        try:
            rows = await self._pool.fetch(
                "SELECT user_text, answer, winner, escaped FROM gorkheavy_exchanges WHERE session = $1 "
                "ORDER BY id DESC LIMIT $2",
                session,
                limit,
            )
        except self._errors as exc:
            raise MemoryStoreError(f"cannot read the PostgreSQL memory at {self._where} ({exc})") from None
        return [_pg_exchange(r) for r in reversed(rows)]

    async def append(self, session: str, exchange: Exchange, keep: int) -> None:
        try:
            await self._append(session, exchange, keep)
        except self._errors as exc:
            raise MemoryStoreError(f"cannot write the PostgreSQL memory at {self._where} ({exc})") from None

    async def _append(self, session: str, exchange: Exchange, keep: int) -> None:
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "INSERT INTO gorkheavy_exchanges (session, user_text, answer, winner, escaped) "
                "VALUES ($1, $2, $3, $4, $5)",
                session,
                *_pg_texts(exchange),
            )
            await connection.execute(
                "DELETE FROM gorkheavy_exchanges WHERE session = $1 AND id NOT IN "
                "(SELECT id FROM gorkheavy_exchanges WHERE session = $1 ORDER BY id DESC LIMIT $2)",
                session,
                max(keep, 0),
            )
            now = time.time()
            if self._retention.due(self._pruned, now):
                self._pruned = now
                await self._prune(connection, now)

    async def _prune(self, connection: Any, now: float) -> None:
        if self._retention.idle_seconds:
            await connection.execute(
                "DELETE FROM gorkheavy_exchanges WHERE session IN (SELECT session FROM gorkheavy_exchanges "
                "GROUP BY session HAVING max(created) < to_timestamp($1))",
                now - self._retention.idle_seconds,
            )
        if self._retention.max_sessions:
            await connection.execute(
                "DELETE FROM gorkheavy_exchanges WHERE session IN (SELECT session FROM gorkheavy_exchanges "
                "GROUP BY session ORDER BY max(id) DESC OFFSET $1)",
                self._retention.max_sessions,
            )

    async def check(self) -> str:
        count = await self._pool.fetchval("SELECT count(*) FROM gorkheavy_exchanges")
        return f"PostgreSQL memory at {self._where} ({count} stored exchanges)"

    async def close(self) -> None:
        await self._pool.close()


async def open_store(config: AppConfig, environ: Mapping[str, str]) -> Store:
    """The store the configuration asks for, ready to use."""
    memory = config.memory
    retention = Retention(memory.max_sessions, memory.idle_expiry, memory.prune_interval)
    if config.memory.store == "none":
        return ProcessStore(retention)
    if config.memory.store == "postgresql":
        dsn = config.memory_dsn(environ)
        if not dsn:
            raise MemoryStoreError(
                "memory.store is postgresql but no DSN: set memory.dsn or $GORKHEAVY_MEMORY_DSN"
            )
        return await PostgresStore.open(dsn, retention=retention)
    return await SqliteStore.open(config.sqlite_path(environ), retention)
