"""Lua scripts, loaded from server/lua/ and registered once per client."""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError


def _source(name: str) -> str:
    return resources.files("server").joinpath("lua", f"{name}.lua").read_text()


class Scripts:
    """The registered scripts of one Redis client."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.decide: Script = client.register_script(_source("decide"))
        self.track: Script = client.register_script(_source("track"))
        self.put_experiment: Script = client.register_script(_source("put_experiment"))
        self.claim: Script = client.register_script(_source("claim"))
        self.merge_into: Script = client.register_script(_source("merge_into"))
        self.make_alias: Script = client.register_script(_source("make_alias"))
        self.unlock: Script = client.register_script(_source("unlock"))
        self.ensure_profile: Script = client.register_script(_source("ensure_profile"))

    def run_many(self, script: Script, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run one script many times in one round trip (a non-transactional pipeline).

        Each call is atomic on its own; EVALSHA is used and the script is loaded only when
        Redis answers NOSCRIPT (after a restart or SCRIPT FLUSH), then the failed calls rerun.
        """
        results: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        for attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            for i in pending:
                keys, args = calls[i]
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            answers = pipe.execute(raise_on_error=False)
            missing = []
            for i, answer in zip(pending, answers, strict=True):
                if isinstance(answer, NoScriptError):
                    missing.append(i)
                elif isinstance(answer, Exception):
                    raise answer
                else:
                    results[i] = answer
            if not missing:
                return results
            if attempt == 0:
                script.sha = self.client.script_load(script.script)
            pending = missing
        raise NoScriptError("script could not be loaded")
