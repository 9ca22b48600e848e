"""A Flask app with eventrelay's Flask-Admin views (tests and the console benchmark)."""

from __future__ import annotations


class Console:
    """A Flask app with eventrelay's Flask-Admin views, its grants and its audit trail."""

    def __init__(self) -> None:
        from flask import Flask
        from flask_admin import Admin
        from sqlalchemy.orm import scoped_session, sessionmaker

        from eventrelay.models.session import get_engine
        from eventrelay.worker.integrations.flask_admin import PERMISSIONS, init_admin

        self.granted: set[str] = set(PERMISSIONS)
        self.audit: list[tuple[str, list[str], str]] = []
        self.app = Flask("console")
        self.app.config["SECRET_KEY"] = "tests-only"
        session = scoped_session(sessionmaker(bind=get_engine()))
        self.app.teardown_appcontext(lambda _exc: session.remove())
        init_admin(
            Admin(self.app, name="eventrelay"),
            session,
            can=lambda perm: perm in self.granted,
            audit=lambda name, ids, message: self.audit.append((name, list(ids), message)),
        )
        self.client = self.app.test_client()
