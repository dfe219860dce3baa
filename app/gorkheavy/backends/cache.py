"""Answer cache stores: in this process (default) or Redis (``cache.url``), both with a TTL per entry."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from gorkheavy.config import AppConfig
from gorkheavy.core.cache import AnswerCache
from gorkheavy.core.redact import redact


class CacheError(Exception):
    """The cache cannot be used; the message says what to fix."""


class ProcessCache:
    """At most ``max_entries`` answers in this process, least recently used dropped first."""

    def __init__(self, max_entries: int) -> None:
        self._entries: OrderedDict[str, tuple[float, Mapping[str, Any]]] = OrderedDict()
        self._max = max_entries

    async def get(self, key: str) -> Mapping[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if time.monotonic() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: Mapping[str, Any], ttl: float) -> None:
        self._entries[key] = (time.monotonic() + ttl, dict(value))
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        self._entries.clear()

    def describe(self) -> str:
        return f"answer cache in this process ({len(self._entries)} entries)"


class RedisCache:
    """Answers in Redis as JSON strings with an expiry (``SET key value PX ttl``), shared by replicas."""

    def __init__(self, client: Any, where: str) -> None:
        self._client = client
        self._where = where

    @classmethod
    async def open(cls, url: str, *, timeout_s: float = 2.0) -> RedisCache:
        try:
            import redis.asyncio as aioredis  # noqa: PLC0415 - optional dependency, only for this store
        except ImportError:
            raise CacheError(
                "cache.url is a Redis URL but the redis package is not installed; "
                "install the extra: pip install 'gorkheavy-lite[cache]'"
            ) from None
        where = redact(url)
        try:
            client = aioredis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
            await client.ping()
        except (ValueError, OSError, aioredis.RedisError) as exc:
            raise CacheError(
                f"cannot use the Redis answer cache at {where} ({redact(str(exc))}); check cache.url"
            ) from None
        return cls(client, where)

    async def get(self, key: str) -> Mapping[str, Any] | None:
        raw = await self._client.get(key)
        if raw is None:
            return None
        value = json.loads(raw)
        return value if isinstance(value, dict) else None

    async def put(self, key: str, value: Mapping[str, Any], ttl: float) -> None:
        await self._client.set(key, json.dumps(value, ensure_ascii=False), px=max(1, int(ttl * 1000)))

    async def close(self) -> None:
        await self._client.aclose()

    def describe(self) -> str:
        return f"answer cache in Redis at {self._where}"


async def open_cache(config: AppConfig) -> ProcessCache | RedisCache | None:
    """The cache the configuration asks for, or None when it is off."""
    cache = config.cache
    if not cache.enabled:
        return None
    if cache.url:
        return await RedisCache.open(cache.url)
    return ProcessCache(cache.max_entries)


__all__ = ["AnswerCache", "CacheError", "ProcessCache", "RedisCache", "open_cache"]
