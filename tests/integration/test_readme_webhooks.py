"""The README's "Webhooks" example, run as written: its environment, its `enqueue` and its
Flask receiver (verifying with `standardwebhooks`), with a real worker in between."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from eventrelay.worker.vendors import refresh_vendors
from tests.conftest import _child_env
from tests.integration.helpers import wait_status
from tests.support import ROOT, free_port, start_worker

pytestmark = pytest.mark.usefixtures("clean")


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def _blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


@pytest.fixture
def readme_receiver() -> Iterator[tuple[dict[str, Any], int]]:
    """The README's receiver, served for real on a free port."""
    [_, receiver_code] = _blocks(_section("Webhooks"), "python")
    namespace: dict[str, Any] = {"__name__": "readme_receiver"}
    exec(compile(receiver_code, "README.md (receiver)", "exec"), namespace)  # noqa: S102
    port = free_port()
    server = make_server("127.0.0.1", port, namespace["app"], threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield namespace, port
    server.shutdown()


def test_the_readme_webhook_example_is_delivered_and_verified(
    readme_receiver: tuple[dict[str, Any], int],
    logs_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver, port = readme_receiver
    section = _section("Webhooks")
    [exports] = _blocks(section, "bash")
    env = dict(re.findall(r"^export (\w+)=(\S+)$", exports, flags=re.M))
    assert set(env) == {
        "WEBHOOK_PARTNER_URL",
        "WEBHOOK_PARTNER_SECRET",
        "WEBHOOK_PARTNER_RATE_LIMIT",
    }
    env["WEBHOOK_PARTNER_URL"] = env["WEBHOOK_PARTNER_URL"].replace(
        "https://partner.example", f"http://127.0.0.1:{port}"
    )
    worker = start_worker(
        _child_env(**env),
        logs_dir / "readme-webhook-worker.log",
        concurrency=1,
        queues="eventrelay.webhook_partner,eventrelay.webhook_partner.retry",
        name="readmewebhook",
    )
    try:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        refresh_vendors()
        [enqueue_code, _] = _blocks(section, "python")
        app: dict[str, Any] = {}
        exec(compile(enqueue_code, "README.md (enqueue)", "exec"), app)  # noqa: S102
        receipt = app["receipt"]
        wait_status(receipt.delivery_id, "delivered")
        assert receiver["seen"] == {str(receipt.delivery_id)}
    finally:
        worker.kill()
        monkeypatch.undo()
        refresh_vendors()
