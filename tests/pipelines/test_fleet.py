"""The authenticated fleet (issue 22, finding 2): a worker's registry entry is signed with the certificate
`ecqa edge init` issues from the project's CA and opened against that CA; anything else written into the
registry — a hand-made file, a Redis key, an entry altered after signing, a certificate of another CA or
of an edge — is refused with one warning naming it. Redis needs a password (or an ACL user), and
`rediss://` is verified against the project's CA. Real CA, real certificates, a real redis-server."""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cli_helpers import one_error_line
from typer.testing import CliRunner

from app.cli import app
from cloud.certs import init_material, issue_workers, load_worker_material
from cloud.errors import MaterialError
from edge.registry import FileRegistry, RedisRegistry, RegistryError, WorkerEntry
from pipelines.fleet import SignedEntries, dispatcher_fleet
from pipelines.settings import load_settings
from pipelines.workers import registry_for

runner = CliRunner()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fleet")
    init_material(d, edges=["dispatcher"], hosts=["127.0.0.1"])
    issue_workers(d, ["w1", "w2"], hosts=["edge-7.lan"])
    return d


def worker_seal(fleet: Path, wid: str = "w1") -> SignedEntries:
    return SignedEntries.for_worker(load_worker_material(fleet, wid))


def reader(fleet: Path, **kw: object) -> SignedEntries:
    return SignedEntries((fleet / "ca.pem").read_bytes(), **kw)  # type: ignore[arg-type]


def entry(wid: str = "w1", url: str = "https://127.0.0.1:9001") -> WorkerEntry:
    return WorkerEntry(id=wid, url=url, model="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", read_tps=300.0,
                       heartbeat=time.time())


def test_a_signed_entry_opens_and_reads_back_as_it_was_written(fleet: Path) -> None:
    e = entry(url="https://edge-7.lan:9001")
    record = worker_seal(fleet).seal(e.to_json())
    assert set(record) == {"entry", "cert", "sig"}
    assert WorkerEntry.from_json(reader(fleet).open(json.loads(json.dumps(record)))) == e


def _foreign_record(tmp_path: Path) -> dict[str, object]:
    other = tmp_path / "other-ca"
    init_material(other)
    issue_workers(other, ["w1"])
    return worker_seal(other).seal(entry().to_json())


@pytest.mark.parametrize(("make", "why"), [
    (lambda f, t: entry().to_json(), "not signed"),
    (lambda f, t: {"entry": entry().to_json()}, "no certificate and signature"),
    (lambda f, t: _foreign_record(t), "not issued by this fleet's CA"),
    # An entry changed after its worker signed it: the attack of finding 2 (read_tps 1e9 wins every dispatch).
    (lambda f, t: {**(r := worker_seal(f).seal(entry().to_json())), "entry": {**r["entry"], "read_tps": 1e9}},
     "signature does not match"),
    (lambda f, t: worker_seal(f, "w2").seal(entry("w1").to_json()), "belongs to worker 'w2'"),
    (lambda f, t: worker_seal(f).seal(entry(url="http://127.0.0.1:9001").to_json()), "not https://"),
    (lambda f, t: worker_seal(f).seal(entry(url="https://evil.example:9001").to_json()), "not valid for host"),
])
def test_a_record_not_signed_by_a_worker_of_this_fleet_is_refused(fleet: Path, tmp_path: Path, make, why: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=why):
        reader(fleet).open(make(fleet, tmp_path))


def test_an_edge_certificate_cannot_sign_a_worker_entry(fleet: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((fleet / "edges" / "dispatcher.key").read_bytes(), password=None)
    record = SignedEntries((fleet / "ca.pem").read_bytes(), ((fleet / "edges" / "dispatcher.pem").read_bytes(), key)) \
        .seal(entry("dispatcher").to_json())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a worker's"):
        reader(fleet).open(record)


def test_an_expired_worker_certificate_is_refused(fleet: Path) -> None:
    record = worker_seal(fleet).seal(entry().to_json())
    later = reader(fleet, clock=lambda: dt.datetime.now(dt.UTC) + dt.timedelta(days=900))
    with pytest.raises(ValueError, match="expired"):
        later.open(record)


def test_the_fake_entry_of_finding_2_is_refused_in_a_signed_folder(fleet: Path, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Before: a hand-written zz-fake.json with read_tps 1e9 and a fresh heartbeat was listed and won dispatch."""
    folder = tmp_path / "reg"
    FileRegistry(folder, seal=worker_seal(fleet)).put(entry())
    fake = {"id": "zz-fake", "url": "https://127.0.0.1:9/", "model": "m.gguf", "read_tps": 1e9, "heartbeat": time.time()}
    (folder / "zz-fake.json").write_text(json.dumps(fake))
    copied = json.loads((folder / "w1.json").read_text())  # a real worker's record, renamed and re-pointed
    copied["entry"] = {**copied["entry"], "id": "zz-copy", "url": "https://127.0.0.1:9/"}
    (folder / "zz-copy.json").write_text(json.dumps(copied))
    registry = FileRegistry(folder, seal=reader(fleet))
    with caplog.at_level(logging.WARNING, logger="edge.registry"):
        assert [e.id for e in registry.entries()] == ["w1"]
        assert [e.id for e in registry.entries()] == ["w1"]
    refused = [r.getMessage() for r in caplog.records]
    assert len(refused) == 2  # one line per refused entry, naming it, not one per read
    assert any("zz-fake.json" in m and "not signed" in m for m in refused)
    assert any("zz-copy.json" in m and "belongs to worker 'w1'" in m for m in refused)


def test_a_dispatcher_without_the_fleet_ca_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(MaterialError, match="ecqa cloud init") as info:
        dispatcher_fleet(load_settings(cloud_dir=tmp_path / "none"))
    assert "ECQA_FLEET_INSECURE=1" in str(info.value) and "\n" not in str(info.value)
    assert dispatcher_fleet(load_settings(cloud_dir=tmp_path / "none", fleet_insecure=True)).seal is None


# --- the CLI -----------------------------------------------------------------------------------
def test_edge_init_issues_worker_certificates_from_the_project_ca(tmp_path: Path) -> None:
    d = tmp_path / "cloud"
    assert "ecqa cloud init" in one_error_line(runner.invoke(app, ["edge", "init", "--dir", str(d), "--worker", "w1"]))
    init_material(d)
    res = runner.invoke(app, ["edge", "init", "--dir", str(d), "--worker", "w1", "--worker", "w2", "--host", "10.0.0.7",
                              "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["workers"] == ["w1", "w2"] and report["hosts"] == ["10.0.0.7"]
    assert {f["path"]: f["mode"] for f in report["files"]}["workers/w1.key"] == "0o600"
    assert set(load_worker_material(d, "w2").hosts()) == {"localhost", "127.0.0.1", "10.0.0.7"}
    assert "--force" in one_error_line(runner.invoke(app, ["edge", "init", "--dir", str(d), "--worker", "w1"]))
    assert "--worker" in one_error_line(runner.invoke(app, ["edge", "init", "--dir", str(d)]))
    assert "invalid edge name" in one_error_line(runner.invoke(app, ["edge", "init", "--dir", str(d), "--worker", "a/b"]))


@pytest.mark.parametrize(("args", "fragment"), [
    (["--id", "nobody"], "ecqa edge init"),  # no certificate for it
    (["--id", "w1", "--advertise", "edge-9.lan"], "not valid for 'edge-9.lan'"),
    (["--insecure", "--host", "0.0.0.0"], "only on a loopback address"),
])
def test_serve_refuses_a_worker_that_could_not_join_before_any_model_loads(fleet: Path, tmp_path: Path, args: list[str],
                                                                          fragment: str) -> None:
    res = runner.invoke(app, ["edge", "serve", "--dir", str(fleet), "--registry", str(tmp_path / "reg"), *args])
    assert fragment in one_error_line(res)


def test_edge_list_shows_signed_workers_and_not_the_rest(fleet: Path, tmp_path: Path) -> None:
    folder = tmp_path / "reg"
    FileRegistry(folder, seal=worker_seal(fleet)).put(entry())
    (folder / "zz-fake.json").write_text(json.dumps({**entry("zz-fake").to_json(), "read_tps": 1e9}))
    res = runner.invoke(app, ["edge", "list", "--registry", str(folder), "--json"], env={"ECQA_CLOUD_DIR": str(fleet)})
    assert res.exit_code == 0, res.output
    assert [w["id"] for w in json.loads(res.stdout)["workers"]] == ["w1"]


# --- Redis: a password (or ACL user), TLS when rediss:// ---------------------------------------
@pytest.fixture(scope="module")
def redis_auth(fleet: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """A real redis-server with a password, an ACL user limited to the registry's keys, and a TLS port whose
    certificate the project's CA issued (the gateway certificate of `cloud init`: valid for 127.0.0.1)."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing — `make test` installs it (apt-get install redis-server)"
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    d = tmp_path_factory.mktemp("redis-auth")
    acl = d / "users.acl"
    acl.write_text("user default on >admin-pw ~* &* +@all\n"
                   "user fleet on >fleet-pw ~ecqa:edge:* resetchannels -@all +get +set +del +scan +mget +select +ping +client\n")
    proc = subprocess.Popen([binary, "--port", str(ports[0]), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(d), "--aclfile", str(acl), "--tls-port", str(ports[1]),
                             "--tls-cert-file", str(fleet / "server.pem"), "--tls-key-file", str(fleet / "server.key"),
                             "--tls-ca-cert-file", str(fleet / "ca.pem"), "--tls-auth-clients", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", ports[1]), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield {"port": ports[0], "tls_port": ports[1]}
    proc.terminate()
    proc.wait(10)


@pytest.mark.network
def test_a_redis_registry_without_a_password_is_refused_in_a_secure_fleet(redis_auth: dict[str, int],
                                                                          fleet: Path) -> None:
    url = f"redis://127.0.0.1:{redis_auth['port']}/0"
    settings = load_settings(edge_registry=url, cloud_dir=fleet)
    with pytest.raises(RegistryError, match="has no password") as info:
        registry_for(settings)
    assert "ECQA_REGISTRY_PASSWORD" in str(info.value)
    wrong = registry_for(load_settings(edge_registry=url, cloud_dir=fleet, registry_username="fleet",
                                       registry_password="guess"))
    with pytest.raises(RegistryError, match="refused the credentials") as info:
        wrong.entries()
    assert "guess" not in str(info.value)


@pytest.mark.network
def test_the_fake_entry_of_finding_2_is_refused_in_a_real_redis(redis_auth: dict[str, int], fleet: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """Before: `SET ecqa:edge:x …` by anyone reaching Redis was listed (and got the questions)."""
    import redis

    url = f"redis://fleet:fleet-pw@127.0.0.1:{redis_auth['port']}/0"
    worker = RedisRegistry(url, ttl_s=5.0, seal=worker_seal(fleet), require_auth=True)
    worker.put(entry())
    admin = redis.Redis(port=redis_auth["port"], password="admin-pw")
    admin.set("ecqa:edge:zz-fake", json.dumps({**entry("zz-fake").to_json(), "read_tps": 1e9}))
    signed = json.loads(admin.get("ecqa:edge:w1"))  # type: ignore[arg-type]
    admin.set("ecqa:edge:zz-copy", json.dumps({**signed, "entry": {**signed["entry"], "id": "zz-copy"}}))
    dispatcher_view = RedisRegistry(url, ttl_s=5.0, seal=reader(fleet), require_auth=True)
    with caplog.at_level(logging.WARNING, logger="edge.registry"):
        assert [e.id for e in dispatcher_view.entries()] == ["w1"]
    assert {r.getMessage().split()[2] for r in caplog.records} == {"ecqa:edge:zz-fake", "ecqa:edge:zz-copy"}
    assert "fleet-pw" not in dispatcher_view.describe()
    with pytest.raises(Exception, match="NOAUTH|authenticat"):
        redis.Redis(port=redis_auth["port"]).set("ecqa:edge:zz-anon", "{}")  # no password: nothing written
    worker.remove("w1")


@pytest.mark.network
def test_rediss_is_verified_against_the_project_ca(redis_auth: dict[str, int], fleet: Path, tmp_path: Path) -> None:
    url = f"rediss://127.0.0.1:{redis_auth['tls_port']}/1"
    settings = load_settings(edge_registry=url, cloud_dir=fleet, registry_username="fleet", registry_password="fleet-pw")
    w = registry_for(settings, worker_seal(fleet, "w2"))
    w.put(replace(entry(), id="w2"))
    assert [e.id for e in registry_for(settings, reader(fleet)).entries()] == ["w2"]
    w.remove("w2")
    other = tmp_path / "other"
    init_material(other)  # a CA that did not issue the server's certificate: the TLS handshake fails
    stranger = registry_for(load_settings(edge_registry=url, cloud_dir=other, registry_username="fleet",
                                          registry_password="fleet-pw"))
    with pytest.raises(RegistryError, match="unreachable"):
        stranger.entries()
