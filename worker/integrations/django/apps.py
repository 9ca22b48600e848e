"""The Django app of eventrelay's console (`INSTALLED_APPS += [this package]`)."""

from __future__ import annotations

from django.apps import AppConfig


class EventRelayConfig(AppConfig):
    name = "eventrelay.worker.integrations.django"
    # Admin URLs and permissions read `eventrelay`, not the module path's last part (`django`,
    # which would also clash with Django's own name in `apps.get_app_config`).
    label = "eventrelay"
    verbose_name = "eventrelay"
    default_auto_field = "django.db.models.BigAutoField"
