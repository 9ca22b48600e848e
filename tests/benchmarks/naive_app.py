"""The baseline a user would write without eventrelay: a plain Celery task that posts with
`requests`, retried by `autoretry_for`, no state, no idempotency, no attempt records."""

from __future__ import annotations

import os
from typing import Any

import requests
from celery import Celery

app = Celery("naive", broker=os.environ.get("NAIVE_BROKER_URL", "redis://127.0.0.1:6379/15"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)


class VendorError(Exception):
    pass


@app.task(
    name="naive.post",
    autoretry_for=(requests.RequestException, VendorError),
    retry_backoff=True,
    max_retries=5,
)
def post(url: str, headers: dict[str, str], body: Any) -> int:
    response = requests.post(url, json=body, headers=headers, timeout=(3.05, 10))
    if response.status_code >= 500 or response.status_code == 429:
        raise VendorError(response.status_code)
    return response.status_code
