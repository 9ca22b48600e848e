"""A Flask app with Flask-SQLAlchemy on eventrelay's database, producing jobs as users' apps do."""

from __future__ import annotations

from typing import Any

from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from eventrelay.worker.integrations.flask import enqueue_after_commit, eventrelay_enqueue
from tests.integration import jobs


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Order(db.Model):  # type: ignore[name-defined]
    __tablename__ = "eventrelay_test_flask_order"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(255))


class PaymentDeclined(Exception):
    """Raised after the job was enqueued, before the commit: the request fails."""


def create_app(database_url: str) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    db.init_app(app)

    @app.post("/orders")
    def create_order() -> Any:
        """Same database: the order and its delivery row commit (or roll back) together."""
        body = request.get_json()
        db.session.add(Order(number=body["number"], email=body["email"]))
        receipt = eventrelay_enqueue(
            db.session,
            "vtcdn",
            "send_event",
            jobs.vtcdn_update(email=body["email"], name=body["number"]),
            idempotency_key=f"order-{body['number']}",
        )
        if body.get("decline") == "rollback":
            db.session.rollback()
            return {"error": "payment declined"}, 402
        if body.get("decline") == "raise":
            raise PaymentDeclined(body["number"])  # a 500; the session is never committed
        db.session.commit()
        return {"delivery_id": str(receipt.delivery_id)}, 201

    @app.post("/orders-with-gift")
    def create_order_with_optional_gift() -> Any:
        """A savepoint: the gift's job is dropped with the gift, the order's job still goes."""
        body = request.get_json()
        db.session.add(Order(number=body["number"], email=body["email"]))
        order_receipt = eventrelay_enqueue(
            db.session, "vtcdn", "send_event", jobs.vtcdn_update(email=body["email"])
        )
        gift = db.session.begin_nested()
        db.session.add(Order(number=body["number"] + "-gift", email=body["email"]))
        gift_receipt = eventrelay_enqueue(
            db.session, "gravityfield", "send_event", jobs.gravityfield_event(uid=body["number"])
        )
        gift.rollback()  # out of stock
        db.session.commit()
        return {
            "delivery_id": str(order_receipt.delivery_id),
            "gift_delivery_id": str(gift_receipt.delivery_id),
        }, 201

    @app.post("/orders-elsewhere")
    def create_order_separate_database() -> Any:
        """Separate databases: the job is enqueued only once the order has committed."""
        body = request.get_json()
        db.session.add(Order(number=body["number"], email=body["email"]))
        enqueue_after_commit(
            db.session,
            "vtcdn",
            "send_event",
            jobs.vtcdn_update(email=body["email"], name=body["number"]),
            idempotency_key=f"order-{body['number']}",
        )
        if body.get("decline") == "rollback":
            db.session.rollback()
            return {"error": "payment declined"}, 402
        db.session.commit()
        return {"order": body["number"]}, 201

    return app
