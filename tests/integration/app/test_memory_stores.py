"""Conversation memory stores: bounded per session, and surviving a restart (SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gorkheavy.backends.memory import (
    MemoryStoreError,
    PostgresStore,
    ProcessStore,
    Retention,
    SqliteStore,
    open_store,
)
from gorkheavy.config import build
from gorkheavy.core.types import Exchange

PG_BIN = Path("/usr/lib/postgresql/15/bin")


async def exercise_bound_and_order(store: SqliteStore | PostgresStore) -> None:
    for i in range(8):
        await store.append("alice", Exchange(f"q{i}", f"a{i}", "qwen"), keep=5)
    await store.append("bob", Exchange("hello", "hi", "llama"), keep=5)
    alice = await store.recent("alice", 5)
    assert [e.user for e in alice] == ["q3", "q4", "q5", "q6", "q7"]
    assert alice[-1] == Exchange("q7", "a7", "qwen")
    assert await store.recent("alice", 2) == alice[-2:]
    assert await store.recent("bob", 5) == [Exchange("hello", "hi", "llama")]
    assert await store.recent("nobody", 5) == []


async def test_sqlite_is_bounded_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "memory.db"
    store = await SqliteStore.open(path)
    await exercise_bound_and_order(store)
    await store.close()

    reopened = await SqliteStore.open(path)
    try:
        assert [e.user for e in await reopened.recent("alice", 5)] == ["q3", "q4", "q5", "q6", "q7"]
        # storage itself is bounded, not just what is read back
        assert "(6 stored exchanges)" in await reopened.check()
    finally:
        await reopened.close()


async def test_sqlite_handles_concurrent_sessions(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "m.db")
    try:

        async def talk(session: str) -> None:
            for i in range(10):
                await store.append(session, Exchange(f"{session}-{i}", "a"), keep=5)

        await asyncio.gather(*(talk(f"s{n}") for n in range(20)))
        for n in range(20):
            assert [e.user for e in await store.recent(f"s{n}", 10)] == [f"s{n}-{i}" for i in range(5, 10)]
    finally:
        await store.close()


async def test_sqlite_path_that_cannot_be_created_says_what_to_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(MemoryStoreError, match=r"set memory\.path to a writable file"):
        await SqliteStore.open(blocker / "memory.db")


async def test_default_sqlite_location_follows_xdg_state_home(tmp_path: Path) -> None:
    config = build({"memory": {"store": "sqlite"}})
    store = await open_store(config, {"XDG_STATE_HOME": str(tmp_path)})
    try:
        assert str(tmp_path / "gorkheavy" / "memory.db") in await store.check()
    finally:
        await store.close()


# -- PostgreSQL: a throwaway cluster started by the test ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_dsn() -> Iterator[str]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (Debian package postgresql-15)")
    root = Path(tempfile.mkdtemp(prefix="gorkheavy-pg-"))
    data = root / "data"
    port = _free_port()
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres user
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*run_as, str(PG_BIN / "initdb"), "-D", str(data), "-U", "gorkheavy", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c fsync=off"
    subprocess.run(
        [
            *run_as,
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(root / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://gorkheavy@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.postgres
async def test_postgres_is_bounded_and_survives_a_restart(postgres_dsn: str) -> None:
    store = await PostgresStore.open(postgres_dsn)
    await store._pool.execute("TRUNCATE gorkheavy_exchanges")
    await exercise_bound_and_order(store)
    await store.close()

    reopened = await PostgresStore.open(postgres_dsn)
    try:
        assert [e.user for e in await reopened.recent("alice", 5)] == ["q3", "q4", "q5", "q6", "q7"]
        assert "(6 stored exchanges)" in await reopened.check()
    finally:
        await reopened.close()


@pytest.mark.postgres
async def test_postgres_selected_by_dsn_from_the_environment(postgres_dsn: str) -> None:
    config = build({"memory": {"store": "postgresql"}})
    store = await open_store(config, {"GORKHEAVY_MEMORY_DSN": postgres_dsn})
    try:
        assert isinstance(store, PostgresStore)
        assert "PostgreSQL memory at postgresql://gorkheavy@127.0.0.1" in await store.check()
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_unreachable_says_what_to_fix() -> None:
    dsn = f"postgresql://someone:secret@127.0.0.1:{_free_port()}/x"
    with pytest.raises(MemoryStoreError) as caught:
        await PostgresStore.open(dsn, connect_s=2)
    assert "check memory.dsn" in str(caught.value)
    assert "secret" not in str(caught.value)


async def test_sqlite_failures_become_store_errors_that_say_where(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "m.db")
    try:
        await store._run(store._db.execute, "PRAGMA query_only=1")  # every write now fails inside SQLite
        with pytest.raises(MemoryStoreError, match=r"cannot write the SQLite memory at .*m\.db"):
            await store.append("s", Exchange("q", "a"), keep=5)
        assert await store.recent("s", 5) == []
    finally:
        await store.close()


# -- retention: a cap on sessions and an idle expiry ----------------------------------------------------


async def exercise_retention(make: Any) -> None:
    """``make(retention)`` -> a fresh, empty store."""
    store = await make(Retention(max_sessions=2, prune_seconds=0))
    try:
        for session in ("a", "b", "c"):
            await store.append(session, Exchange(f"{session}?", "!"), keep=5)
        await store.append("b", Exchange("again", "!"), keep=5)  # b is now the most recent
        await store.append("d", Exchange("d?", "!"), keep=5)
        assert [await store.recent(s, 5) != [] for s in "abcd"] == [False, True, False, True]
    finally:
        await store.close()
    store = await make(Retention(idle_seconds=0.3, prune_seconds=0))
    try:
        await store.append("old", Exchange("q", "a"), keep=5)
        await asyncio.sleep(0.5)
        await store.append("new", Exchange("q", "a"), keep=5)
        assert await store.recent("old", 5) == []
        assert await store.recent("new", 5) == [Exchange("q", "a")]
    finally:
        await store.close()


async def test_sqlite_keeps_a_bounded_number_of_sessions_and_expires_idle_ones(tmp_path: Path) -> None:
    paths = iter(tmp_path / f"m{i}.db" for i in range(2))

    async def make(retention: Retention) -> SqliteStore:
        return await SqliteStore.open(next(paths), retention)

    await exercise_retention(make)


async def test_process_memory_keeps_a_bounded_number_of_sessions_and_expires_idle_ones() -> None:
    async def make(retention: Retention) -> ProcessStore:
        return ProcessStore(retention)

    await exercise_retention(make)


@pytest.mark.postgres
async def test_postgres_keeps_a_bounded_number_of_sessions_and_expires_idle_ones(postgres_dsn: str) -> None:
    async def make(retention: Retention) -> PostgresStore:
        store = await PostgresStore.open(postgres_dsn, retention=retention)
        await store._pool.execute("TRUNCATE gorkheavy_exchanges")
        return store

    await exercise_retention(make)


def test_retention_is_configured_in_the_memory_section() -> None:
    memory = build({"memory": {"max_sessions": 50, "idle_expiry": 3600, "prune_interval": 5}}).memory
    assert (memory.max_sessions, memory.idle_expiry, memory.prune_interval) == (50, 3600, 5)
    assert build({}).memory.max_sessions == 10_000


@pytest.mark.postgres
async def test_postgres_keeps_texts_with_nul_characters(postgres_dsn: str) -> None:
    store = await PostgresStore.open(postgres_dsn)
    try:
        await store._pool.execute("TRUNCATE gorkheavy_exchanges")
        odd = Exchange("what is \x00?", 'a NUL \x00 and "quotes" \\ too', "qwen")
        await store.append("s", odd, keep=5)
        await store.append("s", Exchange("plain", "text"), keep=5)
        assert await store.recent("s", 5) == [odd, Exchange("plain", "text")]
    finally:
        await store.close()


def count_hops(store: SqliteStore, method: str) -> list[int]:
    """Counts the calls of one of the store's batch methods (each is one hop to its thread)."""
    calls = [0]
    original = getattr(store, method)

    def counted(*args: Any) -> Any:
        calls[0] += 1
        return original(*args)

    setattr(store, method, counted)
    return calls


async def test_sqlite_commits_a_burst_of_writes_in_a_few_groups(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "m.db")
    commits = count_hops(store, "_transaction")
    try:
        await asyncio.gather(*(store.append(f"s{n}", Exchange(f"q{n}", "a"), keep=5) for n in range(300)))
        assert commits[0] <= 3  # the first write alone, then everything queued meanwhile
        assert all([await store.recent(f"s{n}", 5) == [Exchange(f"q{n}", "a")] for n in range(300)])
    finally:
        await store.close()


async def test_sqlite_reads_a_burst_of_sessions_in_a_few_hops(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "m.db")
    hops = count_hops(store, "_select")
    try:
        await asyncio.gather(*(store.append(f"s{n}", Exchange(f"q{n}", "a"), keep=5) for n in range(300)))
        found = await asyncio.gather(*(store.recent(f"s{n}", 5) for n in range(300)))
        assert found == [[Exchange(f"q{n}", "a")] for n in range(300)]  # each session its own answer
        assert hops[0] <= 3  # the first read alone, then everything queued meanwhile
        assert await store.recent("nobody", 5) == []
    finally:
        await store.close()
