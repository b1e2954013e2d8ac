"""Lua scripts, loaded from server/lua/ and registered once per client."""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError


def _source(name: str) -> str:
    return resources.files("server").joinpath("lua", f"{name}.lua").read_text()


def _with_learning(name: str) -> str:
    """A script that updates the bandit's learning sums and assignment records."""
    return _source("lib_learning") + _source("lib_assignment") + _source(name)


def _with_exposure(name: str) -> str:
    """A script that counts exposures, with the shared exposure function in front."""
    return _with_learning("lib_exposure") + _source(name)


class Scripts:
    """The registered scripts of one Redis client."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.decide: Script = client.register_script(_with_exposure("decide"))
        self.expose: Script = client.register_script(_with_exposure("expose"))
        self.track: Script = client.register_script(_with_learning("track"))
        self.put_experiment: Script = client.register_script(_source("put_experiment"))
        self.claim: Script = client.register_script(_source("claim"))
        self.merge_into: Script = client.register_script(_source("merge_into"))
        self.make_alias: Script = client.register_script(_source("make_alias"))
        self.unlock: Script = client.register_script(_source("unlock"))
        self.renew_lock: Script = client.register_script(_source("renew_lock"))
        self.ensure_profile: Script = client.register_script(_source("ensure_profile"))
        self.put_personas: Script = client.register_script(_source("put_personas"))
        self.admit_segment: Script = client.register_script(_source("admit_segment"))
        self.repoint: Script = client.register_script(_source("repoint"))
        self.set_predictions: Script = client.register_script(_source("set_predictions"))
        self.sync_buyer: Script = client.register_script(_source("sync_buyer"))
        self.moment_sweep: Script = client.register_script(_source("moment_sweep"))

    def run_many(self, script: Script, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run one script many times in one round trip (a non-transactional pipeline).

        Each call is atomic on its own; EVALSHA is used and the script is loaded only when
        Redis answers NOSCRIPT (after a restart or SCRIPT FLUSH), then the failed calls rerun.
        """
        if isinstance(self.client, redis.RedisCluster):
            return self._run_many_on_cluster(script, calls)
        return self._run_many_on(self.client, script, calls)

    def _run_many_on_cluster(self, script: Script,
                             calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """A cluster client will not pipeline scripts: pipeline them per node ourselves."""
        cluster: Any = self.client
        by_node: dict[str, list[int]] = {}
        nodes: dict[str, Any] = {}
        for i, (keys, _) in enumerate(calls):
            node = cluster.get_node_from_key(keys[0])
            by_node.setdefault(node.name, []).append(i)
            nodes[node.name] = node
        results: list[Any] = [None] * len(calls)
        for name, indexes in by_node.items():
            connection = cluster.get_redis_connection(nodes[name])
            answers = self._run_many_on(connection, script, [calls[i] for i in indexes])
            for i, answer in zip(indexes, answers, strict=True):
                results[i] = answer
        return results

    @staticmethod
    def _run_many_on(client: Any, script: Script,
                     calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        results: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        for attempt in range(2):
            pipe = client.pipeline(transaction=False)
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
                script.sha = client.script_load(script.script)
            pending = missing
        raise NoScriptError("script could not be loaded")
