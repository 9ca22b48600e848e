"""eventrelay in Django's admin: deliveries, dead letters (replay, purge) and vendors (park,
resume).

Shaped after django-q2's admin (every field read-only, a resubmit action) and
django-post-office's (a requeue action, no add permission, a read-only log inline):

* Nothing is added, edited or deleted here. The only changes are the actions, and each goes
  through the same function of `worker.ops.operations` as the CLI command of the same name,
  on Django's own connection and transaction; each says how many rows it changed, writes
  Django's admin log and needs its own permission (`eventrelay.replay_deadletter`,
  `purge_deadletter`, `park_vendor`, `resume_vendor`). A POST of an action without it is a
  403. `purge` asks first, as `delete_selected` does (a second POST with `post=yes`).
* Payloads are masked as the logs mask them (emails, phones, IPs, known secrets) unless the
  user has `eventrelay.view_payload`.
* Fast with any amount of history: counts stop at `COUNT_CAP` rows and then use the planner's
  estimate, filters never ask the database for distinct values, live states read only the
  live partition, and a date range is turned into a range of the time-ordered ids.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connections, router, transaction
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.dateparse import parse_datetime
from django.utils.functional import cached_property
from django.utils.html import format_html

from eventrelay.models.base import LIVE
from eventrelay.models.delivery import DeliveryStatus
from eventrelay.worker.integrations.django import _engine
from eventrelay.worker.integrations.django.models import (
    Attempt,
    DeadLetter,
    Delivery,
    Vendor,
    uuid7_floor,
)

# Exact counts up to this many rows; past it, the planner's estimate (a count of a million
# history rows would cost more than the page it is shown on).
COUNT_CAP = 10_000
# Ids per statement when an action changes many rows.
ACTION_CHUNK = 5_000
LIVE_STATES = (DeliveryStatus.PENDING, DeliveryStatus.DELIVERING, DeliveryStatus.DEAD)


class CappedCountPaginator(Paginator):
    """Counts exactly up to COUNT_CAP, then estimates (EXPLAIN's row count)."""

    @cached_property
    def count(self) -> int:
        qs: QuerySet[Any] = self.object_list
        exact = qs.order_by().values("pk")[:COUNT_CAP].count()
        if exact < COUNT_CAP:
            return int(exact)
        return max(COUNT_CAP, _planner_rows(qs))


def _planner_rows(qs: QuerySet[Any]) -> int:
    sql, params = qs.order_by().values("pk").query.sql_with_params()
    with connections[qs.db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class VendorFilter(admin.SimpleListFilter):
    """The registered vendors (a DISTINCT over the table would read every row)."""

    title = "vendor"
    parameter_name = "vendor"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        from eventrelay.worker.vendors import vendor_names

        return [(v, v) for v in vendor_names()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(vendor=value) if value else queryset


class StatusFilter(admin.SimpleListFilter):
    """A state, read from the one partition that can hold it."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(s.value, s.value) for s in DeliveryStatus]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        # Live work has archived_at = LIVE; delivered and suppressed ones are history, except
        # for the moments before retention's next pass moves a suppressed one.
        where = Q(archived_at=LIVE) if value in LIVE_STATES else Q()
        return queryset.filter(where, status=value)


class LaneFilter(admin.SimpleListFilter):
    """The lane of live work: a finished delivery's lane is only where its last message went,
    and asking it of a million history rows would read them all."""

    title = "lane (live work)"
    parameter_name = "lane"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        from eventrelay.models.delivery import Lane

        return [(lane.value, lane.value) for lane in Lane]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(archived_at=LIVE, lane=value) if value else queryset


class CreatedRangeFilter(admin.DateFieldListFilter):
    """Django's date range links and `created_at__gte` / `__lt` parameters, also as an id range:
    the ids are UUIDv7s, so the primary key's index finds the range in every partition."""

    SLACK = timedelta(minutes=1)  # an id is made a moment before its created_at

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        queryset = super().queryset(request, queryset)
        since = _when(self.used_parameters.get(self.lookup_kwarg_since))
        until = _when(self.used_parameters.get(self.lookup_kwarg_until))
        if since is not None:
            queryset = queryset.filter(id__gte=uuid7_floor(since - self.SLACK))
        if until is not None:
            queryset = queryset.filter(id__lt=uuid7_floor(until + self.SLACK))
        return queryset


def _when(value: Any) -> Any:
    if isinstance(value, list):
        value = value[-1] if value else None
    if not value:
        return None
    from datetime import UTC, datetime

    moment = parse_datetime(str(value))
    if moment is None:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _shown_payload(request: HttpRequest, payload: Any) -> str:
    text = json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    if request.user.has_perm("eventrelay.view_payload"):
        return text
    from eventrelay.worker.redact import redact

    return redact(text, limit=None)


class NoWrites:
    """Rows change only through eventrelay's operations (the admin actions), never by a form,
    whatever the user's permissions say."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AttemptInline(NoWrites, admin.TabularInline):
    """The attempt history, newest first, read-only."""

    model = Attempt
    fk_name = "delivery"
    ordering = ("-number",)
    fields = readonly_fields = (
        "number",
        "outcome",
        "started_at",
        "duration_ms",
        "status_code",
        "error_class",
        "response_excerpt",
    )
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Attempts come with the delivery: whoever may see it sees its history.
        return True


class ReadOnlyAdmin(NoWrites, admin.ModelAdmin):
    """No add, change or delete, whatever the user's permissions say."""

    def _has(self, request: HttpRequest, action: str) -> bool:
        codename = get_permission_codename(action, self.opts)
        return bool(request.user.has_perm(f"{self.opts.app_label}.{codename}"))

    # Actions a user without their permission must get a 403 for, not Django's "no action
    # selected": a script posting it should hear that it was refused.
    guarded_actions: tuple[str, ...] = ()

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        action = request.POST.get("action") if request.method == "POST" else None
        if action in self.guarded_actions and not self._has(request, action):
            raise PermissionDenied
        return super().changelist_view(request, extra_context)


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display: tuple[Any, ...] = (
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
    list_filter: tuple[Any, ...] = (
        VendorFilter,
        StatusFilter,
        LaneFilter,
        ("created_at", CreatedRangeFilter),
    )
    search_fields = ("id", "idempotency_key", "user_ref")
    search_help_text = "A delivery id, an idempotency key or a user reference (exact)."
    ordering: tuple[str, ...] = ("-id",)
    paginator = CappedCountPaginator
    show_full_result_count = False
    # Facet counts are a COUNT per filter choice over every row: never on these tables.
    show_facets = getattr(admin, "ShowFacets", None) and admin.ShowFacets.NEVER
    list_per_page = 50
    inlines = (AttemptInline,)
    fields = readonly_fields = (
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
        "dispatched_at",
        "lease_expires_at",
        "finished_at",
        "updated_at",
        "shown_payload",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and str(match.url_name).endswith("_changelist"):
            # Lists never show the payload: do not fetch and decode 50 of them.
            queryset = queryset.defer("payload")
        return queryset

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        import uuid

        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(id=uuid.UUID(term)), False
        except ValueError:
            pass
        from eventrelay.worker.ops.operations import search_ids

        return queryset.filter(id__in=_on_eventrelay(self.model, search_ids, term)), False

    @admin.display(description="payload")
    def shown_payload(self, obj: Delivery) -> str:
        return format_html("<pre>{}</pre>", getattr(obj, "shown_payload_text", ""))

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            # Read-only fields are rendered from the object alone, after the view returned;
            # the text this user may see travels with this request's own object (the admin
            # instance is shared by every thread).
            obj.shown_payload_text = _shown_payload(request, obj.payload)
        return obj


def _logged(request: HttpRequest, objects: Sequence[Model], flag: int, message: str) -> None:
    if not objects:
        return
    user_id = request.user.pk
    if hasattr(LogEntry.objects, "log_actions"):  # Django 5.1 and later
        LogEntry.objects.log_actions(user_id, objects, flag, change_message=message)
        return
    from django.contrib.contenttypes.models import ContentType

    for obj in objects:
        LogEntry.objects.log_action(
            user_id,
            ContentType.objects.get_for_model(obj, for_concrete_model=False).pk,
            str(obj.pk),
            str(obj),
            flag,
            message,
        )


def _chunks(items: Sequence[Any], size: int = ACTION_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _on_eventrelay(model: type[Model], work: Callable[..., Any], *args: Any) -> Any:
    """Run `work(conn, *args)` on a SQLAlchemy connection that is Django's, in Django's
    transaction (so the admin log entries and the change commit together)."""
    using = router.db_for_write(model)
    with _engine(using).connect() as conn:
        return work(conn, *args)


@admin.register(DeadLetter)
class DeadLetterAdmin(DeliveryAdmin):
    list_display = (
        "id",
        "vendor",
        "operation",
        "attempts",
        "last_status_code",
        "reason",
        "created_at",
        "finished_at",
    )
    list_filter = (VendorFilter, LaneFilter, ("finished_at", admin.DateFieldListFilter))
    ordering = ("-finished_at", "-id")
    actions = ("replay", "purge")
    guarded_actions = ("replay", "purge")

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return self._has(request, "replay")

    def has_purge_permission(self, request: HttpRequest) -> bool:
        return self._has(request, "purge")

    @admin.action(description="Replay selected dead letters", permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        """`eventrelay dlq replay ID...`: pending again with a fresh retry budget, in the retry
        lane; published once Django's transaction commits."""
        from eventrelay.worker.ops.operations import DeadFilter
        from eventrelay.worker.ops.operations import replay as replay_dead
        from eventrelay.worker.producer import publish_after_commit

        selected = {str(o.pk): o for o in queryset}
        using = router.db_for_write(self.model)
        replayed: list[Any] = []
        with transaction.atomic(using=using):
            for ids in _chunks(list(selected)):
                replayed += _on_eventrelay(self.model, replay_dead, DeadFilter(ids=ids))
            _logged(
                request,
                [selected[str(r[0])] for r in replayed],
                CHANGE,
                "Replayed (eventrelay dlq replay)",
            )
            if replayed:
                transaction.on_commit(
                    functools.partial(publish_after_commit, replayed), using=using
                )
        self.message_user(
            request,
            f"{len(replayed)} dead letter(s) replayed"
            + (
                f"; {len(selected) - len(replayed)} were no longer dead"
                if len(replayed) < len(selected)
                else ""
            ),
            messages.SUCCESS,
        )

    @admin.action(description="Purge selected dead letters", permissions=["purge"])
    def purge(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        """`eventrelay dlq purge`: delete them and their attempts, after a confirmation page."""
        from eventrelay.worker.ops.operations import DeadFilter
        from eventrelay.worker.ops.operations import purge as purge_dead

        selected = {str(o.pk): o for o in queryset}
        if request.POST.get("post") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": "Are you sure?",
                "opts": self.opts,
                "objects": list(selected.values()),
                "action_name": "purge",
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                "media": self.media,
            }
            request.current_app = self.admin_site.name
            return TemplateResponse(request, "eventrelay/admin/purge_confirmation.html", context)
        using = router.db_for_write(self.model)
        purged: list[Any] = []
        with transaction.atomic(using=using):
            for ids in _chunks(list(selected)):
                purged += _on_eventrelay(self.model, purge_dead, DeadFilter(ids=ids))
            _logged(
                request,
                [selected[str(i)] for i in purged],
                DELETION,
                "Purged (eventrelay dlq purge)",
            )
        self.message_user(request, f"{len(purged)} dead letter(s) purged", messages.SUCCESS)
        return None


@admin.register(Vendor)
class VendorAdmin(ReadOnlyAdmin):
    """One page: every vendor's circuit, parked reason, cooling, backlog and oldest pending;
    actions `park` (asks for a reason) and `resume`."""

    guarded_actions = ("park", "resume")

    def get_urls(self) -> list[Any]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "",
                self.admin_site.admin_view(self.changelist_view),
                name=f"{info[0]}_{info[1]}_changelist",
            )
        ]

    def has_park_permission(self, request: HttpRequest) -> bool:
        return self._has(request, "park")

    def has_resume_permission(self, request: HttpRequest) -> bool:
        return self._has(request, "resume")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        from eventrelay.worker.config import get_settings
        from eventrelay.worker.ops.operations import vendor_overview

        if not self.has_view_permission(request):
            raise PermissionDenied
        redis_url = get_settings().effective_redis_url
        if request.method == "POST":
            response = self._act(request, redis_url)
            if response is not None:
                return response
            return HttpResponseRedirect(request.get_full_path())
        rows = _on_eventrelay(Vendor, vendor_overview, redis_url)
        actions = [
            (name, label)
            for name, label in (
                ("park", "Park selected vendors"),
                ("resume", "Resume selected vendors"),
            )
            if self._has(request, name)
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Vendors",
            "opts": self.opts,
            "vendors": rows,
            "vendor_actions": actions,
            "media": self.media,
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "eventrelay/admin/vendors.html", context)

    def _act(self, request: HttpRequest, redis_url: str | None) -> HttpResponse | None:
        from eventrelay.worker.errors import EventRelayError
        from eventrelay.worker.ops.operations import park, resume

        action = request.POST.get("action", "")
        names = request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME)
        if action not in self.guarded_actions or not names:
            self.message_user(request, "Select vendors and an action.", messages.WARNING)
            return None
        if not self._has(request, action):
            raise PermissionDenied
        reason = request.POST.get("reason", "").strip()
        if action == "park" and (request.POST.get("post") != "yes" or not reason):
            context = {
                **self.admin_site.each_context(request),
                "title": "Park vendors",
                "opts": self.opts,
                "names": names,
                "missing_reason": request.POST.get("post") == "yes",
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            }
            request.current_app = self.admin_site.name
            return TemplateResponse(request, "eventrelay/admin/park_confirmation.html", context)
        done: list[Vendor] = []
        due = 0
        using = router.db_for_write(Vendor)
        try:
            with transaction.atomic(using=using):
                for name in names:
                    if action == "park":
                        park(name, reason, redis_url)
                    else:
                        due += len(_on_eventrelay(Vendor, resume, name, redis_url).due_now)
                    done.append(Vendor(name=name))
                message = (
                    f"Parked (eventrelay vendors park): {reason}"
                    if action == "park"
                    else "Resumed (eventrelay vendors resume)"
                )
                _logged(request, done, CHANGE, message)
        except EventRelayError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return None
        if action == "park":
            self.message_user(request, f"{len(done)} vendor(s) parked: {reason}", messages.SUCCESS)
        else:
            self.message_user(
                request,
                f"{len(done)} vendor(s) resumed; {due} waiting deliveries are due now",
                messages.SUCCESS,
            )
        return None


def changelist_url(model: type[Model]) -> str:
    """The admin page of one of these models (for links from an app's own pages)."""
    return reverse(f"admin:eventrelay_{model._meta.model_name}_changelist")
