"""Valid jobs for each vendor, as the vendors' pages show them."""

from __future__ import annotations

from typing import Any


def botsi_profile(user: str = "user-123", **extra: Any) -> dict[str, Any]:
    return {
        "country": "US",
        "device": "iPhone 15 Pro Max",
        "os": "iOS 17.0",
        "platform": "ios",
        "customerUserId": user,
        "locale": "en_US",
        "currency": "USD",
        **extra,
    }


def botsi_event(user: str = "user-123", paywall: int = 42, **extra: Any) -> dict[str, Any]:
    return {
        "eventType": "paywall_shown",
        "paywallId": paywall,
        "placementId": "ai-placement-id",
        "isExperiment": True,
        "aiPricingModelId": 32,
        "customerUserId": user,
        **extra,
    }


def vtcdn_update(email: str = "alex@example.com", name: str = "alexandru") -> dict[str, Any]:
    return {"user": {"email": email}, "event": {"update": {"firstname": name}}}


def vtcdn_generic(email: str = "alex@example.com", event_name: str = "my_event") -> dict[str, Any]:
    return {
        "user": {"email": email},
        "event": {"generic": {"generic": {"event_name": event_name, "firstname": "alexandru"}}},
    }


def infobip_event(
    person: str = "jane+tag@example.com", transaction: str = "my-transaction-1"
) -> dict[str, Any]:
    return {
        "personId": person,
        "identifierType": "EMAIL",
        "definitionId": "addToCart",
        "properties": {"transactionId": transaction, "fromPromoCampaign": True, "totalCost": 100},
    }


def gravityfield_event(uid: str = "uid-0001", product: str = "sku-1") -> dict[str, Any]:
    return {
        "user": {"uid": uid, "ses": "s-1"},
        "data": [
            {
                "type": "add-to-cart-v1",
                "name": "Shoes",
                "currency": "RUB",
                "value": 10,
                "quantity": 1,
                "productId": product,
            }
        ],
    }


SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "botsi/create_profile": ("create_profile", botsi_profile()),
    "botsi/send_event": ("send_event", botsi_event(user="user-no-profile")),
    "vtcdn/send_event": ("send_event", vtcdn_update()),
    "infobip/send_event": ("send_event", infobip_event()),
    "gravityfield/send_event": ("send_event", gravityfield_event()),
}
