"""Concurrent users share one edge: their questions wait in Gradio's bounded queue and run one at a
time; past the bound a user is told the queue is full (no crash, no second model call at once)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from ui_helpers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.network]


def wait_for(job: Any, *codes: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while (status := job.status()).code not in codes:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    return status


def test_questions_queue_one_at_a_time_and_past_the_bound_are_refused(ui_server: Any) -> None:
    from gradio_client import Client
    from gradio_client.utils import QueueError, Status

    from app.ui import launch

    service = ui_server.service
    demo = launch(service, "127.0.0.1", free_port(), max_queue=1)  # the same edge, a queue of one
    client = Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=False)
    args = ("Who founded the Brindlewick Orchestra?", "edge", 0.5, 4000, 3, False)
    try:
        with service.lock:  # a model call in progress (another user's, an index build…)
            first = client.submit(*args, api_name="/ask")
            wait_for(first, Status.PROCESSING)
            second = client.submit(*args, api_name="/ask")
            assert wait_for(second, Status.IN_QUEUE).rank == 0  # waits its turn
            third = client.submit(*args, api_name="/ask")
            with pytest.raises(QueueError, match="Queue is full"):
                third.result(timeout=60)
            assert first.status().code == Status.PROCESSING and second.status().code == Status.IN_QUEUE
        answers = [first.result(timeout=120), second.result(timeout=120)]
        for card, *_ in answers:
            assert 'data-badge="edge"' in card
    finally:
        client.close()
        demo.close()
