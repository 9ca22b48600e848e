"""The project's own top-level `models` module: it must not hide eventrelay's."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    number = models.CharField(max_length=64, unique=True)
    email = models.CharField(max_length=255)

    class Meta:
        app_label = "clash"
        db_table = "eventrelay_test_clash_django_order"
