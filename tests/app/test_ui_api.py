"""The UI's API takes what a browser sends, and nothing else (issue 22, finding 7): Gradio turned a
question of 123 into "123" and answered it."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.network]


@pytest.mark.parametrize("question", [123, 1.5, ["Who?"], {"q": "Who?"}, True])
def test_a_question_that_is_not_text_is_refused_with_a_message(ui_server: Any, question: Any) -> None:
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(ui_server.url, verbose=False, analytics_enabled=False, download_files=False)
    try:
        with pytest.raises(AppError, match=r"Question must be text, not \w+ — send a string"):
            client.predict(question, "edge", 0.5, 4000, 3, False, api_name="/ask")
        card, *_ = client.predict("Who founded the Brindlewick Orchestra?", "edge", 0.5, 4000, 3, False,
                                  api_name="/ask")
        assert 'data-badge="edge"' in card  # text still answers
    finally:
        client.close()
