"""The Lua scripts, loaded once per Redis and called by SHA (EVALSHA, NOSCRIPT fallback).

Each script file in ``projections/lua/`` is prefixed with ``lib.lua`` (shared helpers), so a
script is self-contained on the server and its SHA is known without a round trip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from projections.redis_connect import AsyncRedis, SyncRedis

Arg = str | int | bytes


@dataclass(frozen=True, slots=True)
class LuaScript:
    """One script: its full source (lib + body) and SHA1."""

    name: str
    source: str
    sha: str

    def call(self, client: SyncRedis, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """EVALSHA; on NOSCRIPT (restart, failover, SCRIPT FLUSH) load it and retry once."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]

    async def acall(self, client: AsyncRedis, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]


def _read(name: str) -> str:
    return resources.files("projections").joinpath("lua", f"{name}.lua").read_text("utf-8")


STANDALONE = frozenset({"apply"})
"""Scripts without the lib prefix (the hot apply path defines only what it uses)."""


@cache
def script(name: str) -> LuaScript:
    source = _read(name) if name in STANDALONE else _read("lib") + "\n" + _read(name)
    return LuaScript(name, source, hashlib.sha1(source.encode("utf-8")).hexdigest())


SCRIPT_NAMES = ("apply", "check", "reserve", "commit", "release", "balance")


def load_all(client: SyncRedis) -> None:
    """SCRIPT LOAD every script (idempotent); used before pipelined EVALSHA batches."""
    for name in SCRIPT_NAMES:
        client.script_load(script(name).source)


async def aload_all(client: AsyncRedis) -> None:
    for name in SCRIPT_NAMES:
        await client.script_load(script(name).source)
