"""Settings of a Django project whose folder also holds `models.py` and `worker.py`."""

from __future__ import annotations

import os

from sqlalchemy.engine import make_url

_url = make_url(os.environ["EVENTRELAY_DATABASE_URL"])

SECRET_KEY = "eventrelay-tests-only"
INSTALLED_APPS: list[str] = []
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.database,
        "USER": _url.username or "",
        "PASSWORD": _url.password or "",
        "HOST": _url.host or "",
        "PORT": str(_url.port or ""),
    }
}
