"""Fixtures of the web UI tests — reuse them for any browser test of the UI:

- ``ui_cloud`` (session): the real cloud gateway process with the embedded Qwen2.5-Coder-1.5B backend
  (``pipelines.stack.embedded_stack``), which a test may stop and start again on the same port:
  ``.stack`` (Stack: ``gateway_url``, ``pid``, …), ``.running``, ``.stop()``, ``.start()``.
- ``ui_server`` (session): the real UI (``app.ui.launch``) served by this process on a free port
  of 127.0.0.1, over the collection ``ui`` (6 real SQuAD v2 paragraphs + 3 about things that exist
  nowhere else, see tests/conftest.py) in a temp Qdrant folder, escalating to ``ui_cloud``'s gateway:
  ``.url``, ``.service`` (the UiService every browser session shares), ``.cloud`` (= ``ui_cloud``).
  A test that changes shared state (the network profile, the cloud) puts it back before it ends.
- ``placeholder_cloud`` (function): for one test, ``ui_cloud``'s port served by a real gateway (same cloud
  material) in front of the fake OpenAI backend of tests/cloud/cloud_helpers.py, whose answer is
  ``<PERSON_1>``: what a cloud model does with a redacted question. The embedded gateway is back afterwards.
- ``browser`` (session): Debian's headless Chromium driven by Playwright (never `playwright install`).
- ``page`` (function): a fresh browser session on the UI (Ask tab loaded). After the test, pass or
  fail, a full-page screenshot goes to ``test-artifacts/screenshots/<test name>.png``.

Browser helpers (``ask``, ``choose``, …) are in ``ui_helpers.py`` next to this file.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ui_helpers import free_port

# The fake backend lives with the cloud tests; make it importable here too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cloud"))

from cloud_helpers import FakeOpenAI  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
COLLECTION = "ui"


class UiCloud:
    """The gateway process (embedded backend), stoppable and restartable on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.stack: Any = None
        self._ctx: Any = None
        self._port = 0

    @property
    def running(self) -> bool:
        return self._ctx is not None

    def start(self) -> UiCloud:
        from pipelines.stack import embedded_stack

        ctx = embedded_stack(self.workdir, port=self._port)
        self.stack = ctx.__enter__()
        self._ctx = ctx
        self._port = int(self.stack.gateway_url.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        """SIGTERM to the gateway, which stops its backend; returns when both are gone."""
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            ctx.__exit__(None, None, None)


@pytest.fixture(scope="session")
def ui_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiCloud]:
    cloud = UiCloud(tmp_path_factory.mktemp("ui-cloud")).start()
    yield cloud
    cloud.stop()


@dataclass
class UiServer:
    url: str
    service: Any
    cloud: UiCloud


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory: pytest.TempPathFactory, tiny_squad: Path, unseen_squad: Path, embedder: Any,
              ui_cloud: UiCloud, answering_calibration: Path) -> Iterator[UiServer]:
    from app.ui import launch
    from app.ui_service import UiService
    from edge.store_edge import EdgeShardStore
    from indexing.build import build_index
    from indexing.loaders import load_passages
    from pipelines.settings import Settings

    folder = tmp_path_factory.mktemp("ui-index") / "qdrant"
    passages, sources = load_passages([tiny_squad, unseen_squad])
    with EdgeShardStore(path=folder) as store:
        build_index(store, embedder, passages, sources, COLLECTION)
    # Every value given: the session outlives the env of the test that first asked for it.
    settings = Settings(qdrant_path=folder, collection=COLLECTION, cloud_url=ui_cloud.stack.gateway_url,
                        cloud_dir=ui_cloud.stack.cloud_dir, policy="edge", network=None,
                        calibration_path=answering_calibration, kv_dir=folder.parent / "kv",
                        # Tmax: the 1.5B cloud model shares 2 cores with the edge, the UI and Chromium here
                        budget_ms=30000)
    service = UiService.open(settings)
    demo = launch(service, "127.0.0.1", free_port())
    yield UiServer(demo.local_url, service, ui_cloud)
    demo.close()
    service.close()


@pytest.fixture
def placeholder_cloud(ui_server: UiServer) -> Iterator[FakeOpenAI]:
    from cloud.backend import OpenAIBackend
    from cloud.certs import load_server_material
    from cloud.gateway import Gateway

    cloud = ui_server.cloud
    port = int(cloud.stack.gateway_url.rsplit(":", 1)[1])
    cloud.stop()
    with contextlib.ExitStack() as undo:  # in reverse, whatever failed: the embedded gateway is back last
        undo.callback(cloud.start)  # same port: the UI's cloud client reaches it again
        fake = FakeOpenAI(" <PERSON_1>")
        undo.callback(fake.stop)
        gateway = Gateway(load_server_material(cloud.stack.cloud_dir), OpenAIBackend(fake.url), port=port,
                          persist_replays=False)  # the embedded gateway's replay log is its own
        undo.callback(gateway.stop)
        gateway.start()
        yield fake


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is missing — `make test` installs it (apt-get install -y chromium)"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, ui_server: UiServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(90_000)  # a model call on a busy 2-core CI machine
    pg.goto(ui_server.url)
    pg.locator("#question").get_by_role("textbox").wait_for()
    yield pg
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(Exception):  # a screenshot must not turn a failure into a second one
        pg.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)
    context.close()
