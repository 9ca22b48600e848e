"""Settings of the test Django project: PostgreSQL through psycopg 3, on eventrelay's database
(or SQLite, for the tests of separate databases).

The database comes from EVENTRELAY_DJANGO_DATABASE_URL (the tests set it from the
`database_url` fixture), else EVENTRELAY_DATABASE_URL.
"""

from __future__ import annotations

import os

from sqlalchemy.engine import make_url

_url = make_url(
    os.environ.get("EVENTRELAY_DJANGO_DATABASE_URL") or os.environ["EVENTRELAY_DATABASE_URL"]
)

SECRET_KEY = "eventrelay-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "tests.apps.shop",
    # The operator's console: Django's admin with eventrelay's app.
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "eventrelay.worker.integrations.django",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "static/"
ROOT_URLCONF = "tests.apps.django_project.urls"
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
if _url.get_backend_name() == "sqlite":
    # The app on a database of its own (its suite run with no network at all): only the
    # separate-database producers (enqueue_on_commit) apply.
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _url.database}}
