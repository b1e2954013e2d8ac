"""`centric keys` (create, list, revoke) and `centric identify-secret`, against the test Redis."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

from redis.exceptions import ReadOnlyError

from server import create_app, identify_secret
from server.cli import _key_admin, _local_keys
from server.keys import Keyspace, hash_api_key
from server.stores.api_keys import DISPLAY_CHARS, ApiKeyStore
from tests.support import ROOT, experiment_body, free_port
from tests.support import run_cli as run

DECIDE = {"visitor_id": "v", "channel": "web"}


def listed(capsys) -> list[dict]:
    status, out, _ = run(capsys, "keys", "list", "--json")
    assert status == 0
    return [json.loads(line) for line in out.splitlines()]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + key}


def test_cli_creates_a_server_key_alone_on_one_line(cli_env, client, app):
    out = subprocess.run([sys.executable, "-m", "server.cli", "keys", "create", "--role",
                          "server", "--name", "shop backend"],
                         env={**os.environ, **cli_env}, cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cbk_") and len(lines[0]) > 40
    assert app.extensions["centric"].api_keys.role_of(lines[0]) == "server"
    assert client.post("/v1/decide", json=DECIDE, headers=bearer(lines[0])).status_code == 200
    assert client.get("/v1/experiments", headers=bearer(lines[0])).status_code == 403


def test_create_refuses_names_that_could_forge_the_listing(cli_env, capsys):
    status, out, err = run(capsys, "keys", "create", "--role", "sdk", "--name", "a\nb")
    assert status == 2 and out == "" and "printable" in err
    status, out, _ = run(capsys, "keys", "create", "--role", "sdk", "--name", "x" * 65)
    assert status == 2 and out == ""
    assert listed(capsys) == []


def test_list_shows_prefix_role_name_creation_and_last_use_never_the_key(
        cli_env, capsys, client):
    before = time.time()
    _, web, _ = run(capsys, "keys", "create", "--role", "sdk", "--name", "web")
    _, ops, _ = run(capsys, "keys", "create", "--role", "admin", "--name", "ops")
    _, shop, _ = run(capsys, "keys", "create", "--role", "server")
    web, ops, shop = web.strip(), ops.strip(), shop.strip()
    assert client.post("/v1/decide", json=DECIDE, headers=bearer(web)).status_code == 200
    rows = listed(capsys)
    assert [(r["prefix"], r["role"], r["name"]) for r in rows] == [
        (web[:DISPLAY_CHARS], "sdk", "web"), (ops[:DISPLAY_CHARS], "admin", "ops"),
        (shop[:DISPLAY_CHARS], "server", "")]
    assert all(before - 1 <= r["created_at"] <= time.time() + 1 for r in rows)
    assert before - 1 <= rows[0]["last_used"] <= time.time() + 1
    assert rows[1]["last_used"] is None and rows[2]["last_used"] is None

    status, table, _ = run(capsys, "keys", "list")
    assert status == 0
    header, *lines = table.splitlines()
    assert header.split() == ["PREFIX", "ROLE", "NAME", "CREATED", "LAST", "USED"]
    assert len(lines) == 3
    assert lines[0].startswith(web[:DISPLAY_CHARS]) and "never" not in lines[0]
    assert lines[1].split()[:3] == [ops[:DISPLAY_CHARS], "admin", "ops"]
    assert lines[1].rstrip().endswith("never")
    for key in (web, ops, shop):
        # Neither the key, nor more of it than the prefix, nor its digest is ever printed.
        assert key[:DISPLAY_CHARS + 1] not in table
        assert hash_api_key(key) not in table


def test_lookup_and_last_use_stamp_are_one_round_trip(rclient, prefix):
    store = ApiKeyStore(rclient, Keyspace(prefix), clock=lambda: 1_800_000_000.0)
    digest = hash_api_key(store.create("sdk", "web"))
    assert store.role_of_digest(digest) == "sdk"  # loads the script once
    sent: list[str] = []
    execute = rclient.execute_command

    def counting(*args, **options):
        sent.append(str(args[0]))
        return execute(*args, **options)

    rclient.execute_command = counting  # type: ignore[method-assign]
    try:
        assert store.role_of_digest(digest) == "sdk"
        assert store.role_of_digest(hash_api_key("csk_unknown")) is None
    finally:
        del rclient.execute_command
    assert sent == ["EVALSHA", "EVALSHA"]
    assert store.list()[0].last_used == 1_800_000_000.0
    # An unknown digest leaves no record behind.
    assert rclient.exists(Keyspace(prefix).api_key(hash_api_key("csk_unknown"))) == 0


def test_a_read_only_replica_still_checks_keys(rclient, prefix, monkeypatch):
    store = ApiKeyStore(rclient, Keyspace(prefix))
    digest = hash_api_key(store.create("server"))

    def read_only(**_: object) -> None:
        raise ReadOnlyError("READONLY You can't write against a read only replica.")

    monkeypatch.setattr(store, "_lookup", read_only)
    assert store.role_of_digest(digest) == "server"
    assert store.role_of_digest(hash_api_key("cbk_unknown")) is None
    assert store.list()[0].last_used is None


def test_revoke_by_key_name_or_prefix_and_never_an_ambiguous_match(cli_env, capsys, app):
    store = app.extensions["centric"].api_keys
    first, second = store.create("sdk", "dup"), store.create("admin", "dup")
    solo, unnamed = store.create("sdk", "solo"), store.create("server")

    status, out, err = run(capsys, "keys", "revoke", "dup")
    assert status == 2 and out == ""
    assert "matches 2 keys" in err and first[:DISPLAY_CHARS] in err
    assert store.role_of(first) == "sdk" and store.role_of(second) == "admin"

    assert run(capsys, "keys", "revoke", "solo")[0] == 0
    assert store.role_of(solo) is None
    assert run(capsys, "keys", "revoke", first[:DISPLAY_CHARS])[0] == 0
    assert store.role_of(first) is None
    assert run(capsys, "keys", "revoke", second)[0] == 0
    assert store.role_of(second) is None

    # A shorter or longer piece of a key, an empty name, a revoked key: nothing matches.
    for query in (unnamed[:DISPLAY_CHARS - 2], unnamed[:DISPLAY_CHARS + 2], "", solo, "cbk_"):
        status, _, err = run(capsys, "keys", "revoke", query)
        assert status == 1 and "no key matches" in err, query
    assert store.role_of(unnamed) == "server"
    assert [r["role"] for r in listed(capsys)] == ["server"]


def test_revoked_key_answers_401_within_the_cache_interval(cli_env, capsys, settings):
    app = create_app(settings.with_changes(api_key_cache_seconds=0.3))
    client = app.test_client()
    key = app.extensions["centric"].api_keys.create("sdk", "doomed")
    assert client.post("/v1/decide", json=DECIDE, headers=bearer(key)).status_code == 200
    assert run(capsys, "keys", "revoke", "doomed")[0] == 0
    revoked_at = time.monotonic()
    while client.post("/v1/decide", json=DECIDE, headers=bearer(key)).status_code != 401:
        assert time.monotonic() - revoked_at < 0.3 + 1.0, "revoked key still accepted"
        time.sleep(0.02)
    r = client.post("/v1/decide", json=DECIDE, headers=bearer(key))
    assert r.status_code == 401 and r.json["error"]["code"] == "unauthorized"


def test_keys_from_before_the_index_are_found_healed_and_revocable(cli_env, capsys, app,
                                                                 rclient, prefix):
    keys = Keyspace(prefix)
    # What the previous version stored: a record with no display prefix and no index entry.
    old_used, old_idle = "csk_" + "a" * 43, "cak_" + "b" * 43
    for raw, role in ((old_used, "sdk"), (old_idle, "admin")):
        rclient.hset(keys.api_key(hash_api_key(raw)),
                     mapping={"role": role, "name": "legacy", "created_at": "1700000000.000"})
    assert listed(capsys) == []
    # A key in use enters the index on its next lookup.
    client = app.test_client()
    assert client.post("/v1/decide", json=DECIDE, headers=bearer(old_used)).status_code == 200
    assert [r["role"] for r in listed(capsys)] == ["sdk"]
    status, out, _ = run(capsys, "keys", "list", "--scan")
    assert status == 0 and "csk_?" in out and "cak_?" in out and "a" * 8 not in out
    assert sorted(r["role"] for r in listed(capsys)) == ["admin", "sdk"]
    # Old keys have no prefix to match; "legacy" names two keys; the key itself works.
    assert run(capsys, "keys", "revoke", "legacy")[0] == 2
    assert run(capsys, "keys", "revoke", old_idle)[0] == 0
    assert app.extensions["centric"].api_keys.role_of(old_idle) is None


def test_identify_secret_is_printed_alone(cli_env, capsys, monkeypatch, tmp_path):
    data_dir = tmp_path / "var"
    status, out, _ = run(capsys, "identify-secret")
    assert status == 0 and len(out.splitlines()) == 1
    secret = out.strip()
    assert len(secret) == 64 and secret == identify_secret.load("", data_dir)
    assert stat.S_IMODE((data_dir / identify_secret.FILE_NAME).stat().st_mode) == 0o600
    assert run(capsys, "identify-secret", "--data-dir", str(data_dir))[1] == out
    monkeypatch.setenv("CENTRIC_IDENTIFY_SECRET", "from-the-environment")
    assert run(capsys, "identify-secret")[1] == "from-the-environment\n"


def test_unreachable_redis_is_one_line_and_a_failure(cli_env, capsys, monkeypatch):
    monkeypatch.setenv("CENTRIC_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    for argv in (("keys", "list"), ("keys", "revoke", "x"), ("keys", "create", "--role", "sdk")):
        status, out, err = run(capsys, *argv)
        assert status == 1 and out == "", argv
        assert err.startswith("cannot reach Redis") and len(err.splitlines()) == 1


def test_viewer_keys_read_but_change_nothing(cli_env, capsys, client):
    status, out, _ = run(capsys, "keys", "create", "--role", "viewer", "--name", "analyst")
    assert status == 0 and len(out.splitlines()) == 1 and out.startswith("cvk_")
    viewer = bearer(out.strip())
    assert client.get("/v1/experiments", headers=viewer).status_code == 200
    assert client.get("/v1/audit", headers=viewer).status_code == 200
    assert client.post("/v1/experiments", json=experiment_body(),
                       headers=viewer).status_code == 403
    assert client.post("/v1/decide", json=DECIDE, headers=viewer).status_code == 403
    assert [(r["role"], r["name"]) for r in listed(capsys)] == [("viewer", "analyst")]


def test_key_creation_and_revocation_are_audited_with_the_os_user(cli_env, capsys, client,
                                                                   admin, monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "alice")
    before = int(time.time() * 1000)
    _, out, _ = run(capsys, "keys", "create", "--role", "viewer", "--name", "analyst")
    assert run(capsys, "keys", "revoke", "analyst")[0] == 0
    assert run(capsys, "keys", "revoke", "analyst")[0] == 1  # nothing left: nothing recorded

    def no_user() -> str:
        raise OSError("no user name")

    monkeypatch.setattr("getpass.getuser", no_user)
    _, other, _ = run(capsys, "keys", "create", "--role", "sdk")
    entries = client.get("/v1/audit", headers=admin).json["entries"]
    assert [(e["actor"], e["action"], e["target_type"], e["target"], e["details"])
            for e in entries] == [
        ("cli", "create", "api_key", other[:DISPLAY_CHARS], {"role": "sdk", "name": ""}),
        ("cli:alice", "revoke", "api_key", out[:DISPLAY_CHARS],
         {"role": "viewer", "name": "analyst"}),
        ("cli:alice", "create", "api_key", out[:DISPLAY_CHARS],
         {"role": "viewer", "name": "analyst"})]
    assert all(before <= e["at"] <= time.time() * 1000 for e in entries)


def test_serve_makes_a_local_key_of_every_role_once(rclient, settings, tmp_path, client, admin):
    keys = _local_keys(_key_admin(rclient, settings), tmp_path)
    assert sorted(keys) == ["admin", "sdk", "server", "viewer"]
    assert keys["viewer"].startswith("cvk_")
    assert _local_keys(_key_admin(rclient, settings), tmp_path) == keys  # kept, not remade
    entries = client.get("/v1/audit", headers=admin).json["entries"]
    assert sorted(e["details"]["role"] for e in entries) == ["admin", "sdk", "server", "viewer"]
