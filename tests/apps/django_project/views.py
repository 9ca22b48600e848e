"""Views that create an order and enqueue its job in the same `transaction.atomic()` block."""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction
from django.http import HttpRequest, JsonResponse

from eventrelay.worker.integrations.django import enqueue, enqueue_on_commit
from tests.apps.shop.models import Order
from tests.integration import jobs


class PaymentDeclined(Exception):
    """Raised after the job was enqueued, so the whole block rolls back."""


def create_order(request: HttpRequest) -> Any:
    """Same database: the order and its delivery row commit (or roll back) together."""
    body = json.loads(request.body)
    with transaction.atomic():
        order = Order.objects.create(number=body["number"], email=body["email"])
        receipt = enqueue(
            "vtcdn",
            "send_event",
            jobs.vtcdn_update(email=body["email"], name=body["number"]),
            idempotency_key=f"order-{order.number}",
        )
        if body.get("decline"):
            raise PaymentDeclined(order.number)
    return JsonResponse({"order": order.pk, "delivery_id": str(receipt.delivery_id)}, status=201)


def checkout(request: HttpRequest) -> Any:
    """The order, its vtcdn confirmation and its Infobip purchase event, in one transaction."""
    body = json.loads(request.body)
    with transaction.atomic():
        order = Order.objects.create(number=body["number"], email=body["email"])
        enqueue(
            "vtcdn",
            "send_event",
            {
                "user": {"email": order.email},
                "event": {"confirmation": {"orderId": order.number, "total": body["total"]}},
            },
        )
        purchase = enqueue(
            "infobip",
            "send_event",
            {
                "personId": order.email,
                "identifierType": "EMAIL",
                "definitionId": "purchase",
                "properties": {"orderNumber": order.number, "total": body["total"]},
            },
            idempotency_key=f"purchase-{order.number}",
        )
        if body.get("decline"):
            raise PaymentDeclined(order.number)
    return JsonResponse({"order": order.pk, "delivery_id": str(purchase.delivery_id)}, status=201)


def checkout_separate_database(request: HttpRequest) -> Any:
    """`checkout` for an app whose database is not eventrelay's: enqueued after the commit."""
    body = json.loads(request.body)
    with transaction.atomic():
        order = Order.objects.create(number=body["number"], email=body["email"])
        enqueue_on_commit(
            "infobip",
            "send_event",
            {
                "personId": order.email,
                "identifierType": "EMAIL",
                "definitionId": "purchase",
                "properties": {"orderNumber": order.number, "total": body["total"]},
            },
            idempotency_key=f"purchase-{order.number}",
        )
        if body.get("decline"):
            raise PaymentDeclined(order.number)
    return JsonResponse({"order": order.pk}, status=201)


def create_order_separate_database(request: HttpRequest) -> Any:
    """Separate databases: the job is enqueued only once the order has committed."""
    body = json.loads(request.body)
    with transaction.atomic():
        order = Order.objects.create(number=body["number"], email=body["email"])
        enqueue_on_commit(
            "vtcdn",
            "send_event",
            jobs.vtcdn_update(email=body["email"], name=body["number"]),
            idempotency_key=f"order-{order.number}",
        )
        if body.get("decline"):
            raise PaymentDeclined(order.number)
    return JsonResponse({"order": order.pk}, status=201)
