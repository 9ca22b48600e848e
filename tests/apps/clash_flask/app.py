"""A Flask app whose folder holds `models.py` and `worker.py`, enqueueing as users' apps do.

    python app.py DATABASE_URL ORDER_PREFIX

Creates three orders, each with its vtcdn job in the order's own transaction, and one that is
declined (rolled back with its job); prints {"delivery_ids": [...], "chores": [...]} as JSON.
"""

from __future__ import annotations

import json
import sys

from flask import Flask, request

from eventrelay.worker.integrations.flask import eventrelay_enqueue
from models import Order, db
from worker import CHORES, remember


def create_app(database_url: str) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    db.init_app(app)

    @app.post("/orders")
    def create_order() -> tuple[dict[str, str], int]:
        body = request.get_json()
        order = Order(number=body["number"], email=body["email"])
        db.session.add(order)
        receipt = eventrelay_enqueue(
            db.session,
            "vtcdn",
            "send_event",
            {"user": {"email": body["email"]}, "event": {"update": {"firstname": body["number"]}}},
            idempotency_key=f"clash-flask-{body['number']}",
        )
        if body.get("decline"):
            db.session.rollback()
            return {"declined": body["number"]}, 402
        db.session.commit()
        remember(body["number"])
        return {"delivery_id": str(receipt.delivery_id)}, 201

    return app


def main() -> None:
    database_url, prefix = sys.argv[1], sys.argv[2]
    app = create_app(database_url)
    with app.app_context():
        Order.__table__.drop(db.engine, checkfirst=True)
        db.create_all()
    client = app.test_client()
    ids = []
    for n in range(3):
        answer = client.post(
            "/orders", json={"number": f"{prefix}-{n}", "email": f"f{n}@example.com"}
        )
        assert answer.status_code == 201, answer.get_data(as_text=True)
        ids.append(answer.get_json()["delivery_id"])
    declined = client.post(
        "/orders", json={"number": f"{prefix}-x", "email": "x@example.com", "decline": True}
    )
    assert declined.status_code == 402
    print(json.dumps({"delivery_ids": ids, "chores": CHORES}))


if __name__ == "__main__":
    main()
