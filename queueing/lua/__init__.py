"""The Lua scripts beside this file, loaded into Redis by SHA.

Each script runs atomically on the Redis server (Redis executes one script at a time), which is
what makes every check-and-update of the limiter, the scheduler and quotas race-free across
processes and machines. A ``*_lib.lua`` file holds helpers prepended to its family's scripts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

LUA_DIR = Path(__file__).resolve().parent


class LuaScript:
    """One script (optionally prefixed by shared helper files), run with EVALSHA.

    After a Redis restart or ``SCRIPT FLUSH`` the server no longer knows the SHA: the call
    loads the source once and retries, so callers never see NOSCRIPT.
    """

    def __init__(self, name: str, *, prelude: Sequence[str] = ()) -> None:
        parts = [(LUA_DIR / f"{part}.lua").read_text() for part in (*prelude, name)]
        self.name = name
        self.source = "\n".join(parts)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def __call__(
        self, client: redis.Redis, *, keys: Sequence[str], args: Sequence[Any] = ()
    ) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)
