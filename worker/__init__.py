"""eventrelay: durable delivery of application events to vendor APIs.

`celery -A worker ...` finds the Celery app here as `worker.app`.
"""

from worker.celery_app import app

celery = app
__all__ = ["app", "celery"]
