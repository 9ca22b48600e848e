"""eventrelay in a Flask app's Flask-Admin: the same console as the Django admin's.

    from flask_admin import Admin
    from eventrelay.worker.integrations.flask_admin import init_admin

    init_admin(Admin(app), db.session, can=lambda perm: current_user.has(perm))

(`pip install 'eventrelay[flask-admin]'`.) Views on eventrelay's own SQLAlchemy models:

* `/admin/delivery/`: every delivery; filters vendor, status, lane, created between; exact
  search by delivery id, idempotency key or user reference; details with the payload masked as
  the logs mask it unless `can("view_payload")`, and the attempts, newest first.
* `/admin/deadletter/`: dead letters only (live partition), actions `replay` and `purge`.
* `/admin/vendors/`: circuit, parked reason, cooling seconds left, backlog, oldest pending age;
  `park` (with a reason) and `resume`.

Nothing can be created, edited or deleted. Each action goes through the same function of
`worker.ops.operations` as the CLI command of the same name, on the session given (which must
be on eventrelay's database), needs `can(name)` (else 403), says how many rows it changed and
is given to `audit` (default: logger `eventrelay.admin`) — Flask has no admin log of its own.
Lists never count (Flask-Admin's simple pager), so a page costs the same with any history.
"""

from __future__ import annotations

import json
import logging
import uuid
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from flask import abort, flash, redirect, request
from flask_admin import Admin, BaseView, expose
from flask_admin.actions import action
from flask_admin.contrib.sqla import ModelView
from flask_admin.contrib.sqla.filters import DateTimeBetweenFilter, FilterEqual
from markupsafe import Markup, escape
from sqlalchemy import select

from eventrelay.models.base import LIVE
from eventrelay.models.delivery import ATTEMPTS, Delivery, DeliveryStatus, Lane

log = logging.getLogger("eventrelay.admin")

Can = Callable[[str], bool]
Audit = Callable[[str, Sequence[str], str], None]
PERMISSIONS = ("view_payload", "replay", "purge", "park", "resume")


def _default_can(permission: str) -> bool:
    # Unmasked payloads only when the app says so; the actions are the app's to guard (protect
    # /admin as a whole, or pass `can`).
    return permission != "view_payload"


def _default_audit(action_name: str, ids: Sequence[str], message: str) -> None:
    log.info(
        "admin action %s by %s: %s (%s)",
        action_name,
        request.remote_user or request.remote_addr,
        message,
        ", ".join(ids),
    )


class _LiveFilterEqual(FilterEqual):
    """Equal, on live work only (the live partition): a lane, or a state that only live
    deliveries have, asked of the history would read all of it."""

    def apply(self, query: Any, value: Any, alias: Any = None) -> Any:
        return super().apply(query, value, alias).filter(Delivery.archived_at == LIVE)


class _StatusFilter(FilterEqual):
    def apply(self, query: Any, value: Any, alias: Any = None) -> Any:
        query = super().apply(query, value, alias)
        live = {
            DeliveryStatus.PENDING.value,
            DeliveryStatus.DELIVERING.value,
            DeliveryStatus.DEAD.value,
        }
        return query.filter(Delivery.archived_at == LIVE) if value in live else query


def _vendor_names() -> list[tuple[str, str]]:
    from eventrelay.worker.vendors import vendor_names

    return [(v, v) for v in vendor_names()]


def _value(_view: Any, _context: Any, model: Any, name: str) -> str:
    value = getattr(model, name)
    return str(getattr(value, "value", value))


class _Guarded:
    """Permission checks shared by the views."""

    can: Can = staticmethod(_default_can)
    audit: Audit = staticmethod(_default_audit)
    guarded_actions: tuple[str, ...] = ()

    def _use(self, can: Can | None, audit: Audit | None) -> None:
        """The app's permission check and audit log, where given, instead of the defaults."""
        if can is not None:
            self.can = can
        if audit is not None:
            self.audit = audit

    def _require(self, name: str) -> None:
        if not self.can(name):
            abort(403)


class DeliveryView(_Guarded, ModelView):
    can_create = False
    can_edit = False
    can_delete = False
    can_view_details = True
    can_export = False
    simple_list_pager = True  # no COUNT(*) over the history
    named_filter_urls = True
    page_size = 50
    column_list: tuple[str, ...] = (
        "id",
        "vendor",
        "operation",
        "status",
        "lane",
        "attempts",
        "last_status_code",
        "created_at",
        "finished_at",
    )
    column_details_list = (
        "id",
        "vendor",
        "operation",
        "status",
        "lane",
        "attempts",
        "reason",
        "last_status_code",
        "idempotency_key",
        "user_ref",
        "depends_on",
        "created_at",
        "next_attempt_at",
        "finished_at",
        "payload",
        "attempt_history",
    )
    column_default_sort = ("id", True)
    column_sortable_list: tuple[str, ...] = ("id",)
    # The search box: exact matches (see _apply_search), not ILIKE over every row.
    column_searchable_list = ("idempotency_key", "user_ref")
    column_filters: tuple[Any, ...] = (
        FilterEqual(Delivery.vendor, "Vendor", options=_vendor_names),
        _StatusFilter(
            Delivery.status, "Status", options=[(s.value, s.value) for s in DeliveryStatus]
        ),
        _LiveFilterEqual(Delivery.lane, "Lane", options=[(s.value, s.value) for s in Lane]),
        DateTimeBetweenFilter(Delivery.created_at, "Created"),
    )

    def __init__(
        self,
        session: Any,
        can: Can | None = None,
        audit: Audit | None = None,
        name: str = "Deliveries",
        endpoint: str = "delivery",
        **kwargs: Any,
    ) -> None:
        self._use(can, audit)
        with warnings.catch_warnings():
            # Flask-Admin 2 would rather have Flask-SQLAlchemy's `db`; a plain session (ours,
            # on eventrelay's engine) is still how it works without Flask-SQLAlchemy.
            warnings.filterwarnings("ignore", "Passing a session object", DeprecationWarning)
            super().__init__(Delivery, session, name=name, endpoint=endpoint, **kwargs)
        self.column_formatters = {"status": _value, "lane": _value}
        self.column_formatters_detail = {
            "status": _value,
            "lane": _value,
            "payload": self._payload,
            "attempt_history": self._attempts,
        }

    # Composite key (id, archived_at) on PostgreSQL; the id alone names a delivery.
    def get_pk_value(self, model: Any) -> str:
        return str(model.id)

    def get_one(self, id: Any) -> Any:
        try:
            key = uuid.UUID(str(id))
        except ValueError:
            return None
        return self.get_query().filter(Delivery.id == key).one_or_none()

    def _apply_search(
        self, query: Any, count_query: Any, joins: Any, count_joins: Any, search: str
    ) -> Any:
        from eventrelay.worker.ops.operations import search_ids

        where = Delivery.id.in_(search_ids(self.session.connection(), search))
        query = query.filter(where)
        if count_query is not None:
            count_query = count_query.filter(where)
        return query, count_query, joins, count_joins

    def _payload(self, _view: Any, _context: Any, model: Any, _name: str) -> Markup:
        text = json.dumps(model.payload, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        if not self.can("view_payload"):
            from eventrelay.worker.redact import redact

            text = redact(text, limit=None)
        return Markup("<pre>{}</pre>").format(text)

    def _attempts(self, _view: Any, _context: Any, model: Any, _name: str) -> Markup:
        rows = self.session.execute(
            select(ATTEMPTS)
            .where(ATTEMPTS.c.delivery_id == model.id)
            .order_by(ATTEMPTS.c.number.desc())
        ).all()
        cells = "".join(
            Markup(
                '<tr class="attempt"><td class="number">{}</td><td>{}</td><td>{}</td>'
                "<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"
            ).format(
                a.number,
                a.outcome,
                a.started_at,
                a.duration_ms,
                a.status_code if a.status_code is not None else "",
                a.error_class or "",
                a.response_excerpt or "",
            )
            for a in rows
        )
        head = Markup(
            "<tr><th>#</th><th>outcome</th><th>started</th><th>ms</th><th>status</th>"
            "<th>error</th><th>response</th></tr>"
        )
        return Markup('<table class="table table-sm attempts">{}{}</table>').format(
            head, Markup(cells)
        )

    @expose("/action/", methods=("POST",))
    def action_view(self) -> Any:
        name = request.form.get("action", "")
        if name in self.guarded_actions:
            self._require(name)
        return super().action_view()

    def is_action_allowed(self, name: str) -> bool:
        if name in self.guarded_actions:
            return self.can(name)
        return super().is_action_allowed(name)


class DeadLetterView(DeliveryView):
    column_list = (
        "id",
        "vendor",
        "operation",
        "attempts",
        "last_status_code",
        "reason",
        "created_at",
        "finished_at",
    )
    column_default_sort = ("finished_at", True)
    column_sortable_list = ("finished_at", "id")
    column_filters = (
        FilterEqual(Delivery.vendor, "Vendor", options=_vendor_names),
        _LiveFilterEqual(Delivery.lane, "Lane", options=[(s.value, s.value) for s in Lane]),
        DateTimeBetweenFilter(Delivery.finished_at, "Dead-lettered"),
    )
    guarded_actions = ("replay", "purge")

    def __init__(
        self, session: Any, can: Can | None = None, audit: Audit | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("name", "Dead letters")
        kwargs.setdefault("endpoint", "deadletter")
        super().__init__(session, can, audit, **kwargs)

    def get_query(self) -> Any:
        # archived_at = LIVE: the live partition only, however much history there is.
        return (
            super()
            .get_query()
            .filter(Delivery.archived_at == LIVE, Delivery.status == DeliveryStatus.DEAD)
        )

    def get_count_query(self) -> Any:
        return (
            super()
            .get_count_query()
            .filter(Delivery.archived_at == LIVE, Delivery.status == DeliveryStatus.DEAD)
        )

    @action("replay", "Replay", "Replay the selected dead letters?")
    def action_replay(self, ids: Sequence[str]) -> None:
        """`eventrelay dlq replay ID...`"""
        from eventrelay.worker.ops.operations import DeadFilter, replay
        from eventrelay.worker.producer import publish_after_commit

        self._require("replay")
        rows = replay(self.session.connection(), DeadFilter(ids=list(ids)))
        self.session.commit()
        if rows:
            publish_after_commit(rows)
        message = f"{len(rows)} dead letter(s) replayed"
        self.audit("replay", [str(r[0]) for r in rows], message)
        flash(message, "success")

    @action("purge", "Purge", "Delete the selected dead letters and their attempts for good?")
    def action_purge(self, ids: Sequence[str]) -> None:
        """`eventrelay dlq purge`"""
        from eventrelay.worker.ops.operations import DeadFilter, purge

        self._require("purge")
        purged = purge(self.session.connection(), DeadFilter(ids=list(ids)))
        self.session.commit()
        message = f"{len(purged)} dead letter(s) purged"
        self.audit("purge", [str(i) for i in purged], message)
        flash(message, "success")


class VendorsView(_Guarded, BaseView):
    """Every vendor's gate and backlog, with `park` and `resume`."""

    guarded_actions = ("park", "resume")

    def __init__(
        self,
        session: Any,
        can: Can | None = None,
        audit: Audit | None = None,
        name: str = "Vendors",
        endpoint: str = "vendors",
        **kwargs: Any,
    ) -> None:
        self._use(can, audit)
        self.session = session
        super().__init__(name=name, endpoint=endpoint, **kwargs)

    @expose("/", methods=("GET", "POST"))
    def index(self) -> Any:
        from eventrelay.worker.config import get_settings
        from eventrelay.worker.errors import EventRelayError
        from eventrelay.worker.ops.operations import park, resume, vendor_overview

        redis_url = get_settings().effective_redis_url
        if request.method == "POST":
            name = request.form.get("action", "")
            vendors = request.form.getlist("vendor")
            if name not in self.guarded_actions or not vendors:
                abort(400)
            self._require(name)
            reason = request.form.get("reason", "").strip()
            try:
                due = 0
                for vendor in vendors:
                    if name == "park":
                        park(vendor, reason, redis_url)
                    else:
                        due += len(resume(self.session.connection(), vendor, redis_url).due_now)
                self.session.commit()
            except EventRelayError as exc:
                self.session.rollback()
                flash(str(exc), "error")
                return redirect(self.get_url(".index"))
            message = (
                f"{len(vendors)} vendor(s) parked: {reason}"
                if name == "park"
                else f"{len(vendors)} vendor(s) resumed; {due} waiting deliveries are due now"
            )
            self.audit(name, vendors, message)
            flash(message, "success")
            return redirect(self.get_url(".index"))
        rows = vendor_overview(self.session.connection(), redis_url)
        self.session.rollback()  # a read: end it, hold no snapshot open
        return self.render_string(_vendors_table(rows, self.can))

    def render_string(self, body: Markup) -> Any:
        # BaseView.render's context, for a page that needs no template file of its own.
        from flask import current_app, render_template_string
        from flask_admin import babel
        from flask_admin import helpers as h

        theme = self.admin.theme
        return render_template_string(
            "{% extends admin_base_template %}{% block body %}<h2>Vendors</h2>{{ body }}"
            "{% endblock %}",
            admin_view=self,
            admin_base_template=theme.base_template,
            admin_csp_nonce_attribute="",
            _gettext=babel.gettext,
            _ngettext=babel.ngettext,
            h=h,
            get_url=self.get_url,
            config=current_app.config,
            theme=theme,
            body=body,
        )


def _vendors_table(rows: list[dict[str, Any]], can: Can) -> Markup:
    def cell(value: Any) -> str:
        return "" if value is None else str(escape(value))

    out = [
        '<form method="post"><table class="table table-striped vendors"><tr><th></th>'
        "<th>vendor</th><th>circuit</th><th>parked reason</th><th>cooling seconds left</th>"
        "<th>backlog</th><th>dead letters</th><th>oldest pending age (s)</th></tr>"
    ]
    for r in rows:
        out.append(
            f'<tr data-vendor="{cell(r["vendor"])}"><td><input type="checkbox" name="vendor" '
            f'value="{cell(r["vendor"])}"></td><th>{cell(r["vendor"])}</th>'
            f'<td class="circuit">{cell(r["circuit"])}</td>'
            f'<td class="parked-reason">{cell(r["parked_reason"])}</td>'
            f"<td>{cell(r['cooling_seconds_left'])}</td><td>{cell(r['backlog'])}</td>"
            f"<td>{cell(r['dead'])}</td><td>{cell(r['oldest_pending_age_seconds'])}</td></tr>"
        )
    out.append("</table>")
    if can("park"):
        out.append(
            '<p><input type="text" name="reason" placeholder="why (for park)"> '
            '<button name="action" value="park" class="btn btn-warning">Park</button></p>'
        )
    if can("resume"):
        out.append(
            '<p><button name="action" value="resume" class="btn btn-primary">Resume</button></p>'
        )
    out.append("</form>")
    return Markup("".join(out))


def init_admin(
    admin: Admin,
    session: Any,
    can: Can | None = None,
    audit: Audit | None = None,
    category: str | None = "eventrelay",
) -> None:
    """Add the deliveries, dead letters and vendors views to `admin`.

    Args:
        session: a SQLAlchemy session (or Flask-SQLAlchemy's `db.session`) on eventrelay's
            database.
        can: `can(permission)` for each of PERMISSIONS; default: every action, and payloads
            masked.
        audit: called as `audit(action, ids, message)` after each action; default: a line on
            logger `eventrelay.admin`.
    """
    admin.add_view(DeliveryView(session, can, audit, category=category))
    admin.add_view(DeadLetterView(session, can, audit, category=category))
    admin.add_view(VendorsView(session, can, audit, category=category))
