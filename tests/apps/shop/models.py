from __future__ import annotations

from django.db import models


class Order(models.Model):
    number = models.CharField(max_length=64, unique=True)
    email = models.CharField(max_length=255)

    class Meta:
        app_label = "shop"
        db_table = "eventrelay_test_shop_order"
