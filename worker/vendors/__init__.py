"""The vendor registry: every vendor is an entry point of the group `eventrelay.vendors`.

eventrelay's own vendors are registered in its pyproject exactly as a third party's package
registers its own (kombu finds transports, Airflow providers the same way):

    [project.entry-points."eventrelay.vendors"]
    acme = "eventrelay_acme:Acme"

An entry point names either a `Vendor` subclass (its `name` is the entry point's name) or a
function returning `Vendor` subclasses made from configuration, each named after the entry
point (`webhook`, `webhook_<name>`: see `webhook.configured_webhooks`).

Entry points are loaded on first use, never at import, once per process (`refresh_vendors()`
reads them again); what a function makes is asked for at each look-up. A plugin that fails
to load is logged with its entry point name and listed by `broken_vendors()` (and
`eventrelay vendors list`); every other vendor loads as usual.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from typing import Any

from pydantic import ValidationError

from eventrelay.worker.errors import ConfigurationError, FieldError, InvalidJob
from eventrelay.worker.redact import redact
from eventrelay.worker.vendors.base import Vendor

log = logging.getLogger("eventrelay.vendors")

ENTRY_POINT_GROUP = "eventrelay.vendors"
DISTRIBUTION = "eventrelay"
# A vendor's name is part of queue names (`eventrelay.<vendor>`) and of its settings'
# environment names (`<VENDOR>_*`): lower case letters, digits and single underscores.
VENDOR_NAME = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")

# The same entry points as pyproject's (a unit test holds them equal). Used only when the
# installed metadata of eventrelay has none: an editable install made before they existed
# keeps working until it is reinstalled, and says so.
BUILTIN_ENTRY_POINTS = {
    "botsi": "eventrelay.worker.vendors.botsi:Botsi",
    "gravityfield": "eventrelay.worker.vendors.gravityfield:GravityField",
    "infobip": "eventrelay.worker.vendors.infobip:Infobip",
    "vtcdn": "eventrelay.worker.vendors.vtcdn:Vtcdn",
    "webhook": "eventrelay.worker.vendors.webhook:configured_webhooks",
}


class BrokenVendor(Exception):
    """An entry point that did not give usable vendors."""


def _entry_points() -> list[metadata.EntryPoint]:
    """eventrelay's own entry points first (a plugin cannot take a built-in's name), then the
    others by distribution and name, so which plugin wins a name never depends on sys.path."""
    found = list(metadata.entry_points(group=ENTRY_POINT_GROUP))

    def dist_name(ep: metadata.EntryPoint) -> str:
        dist = getattr(ep, "dist", None)
        return str(dist.metadata["Name"]) if dist is not None else ""

    own = [ep for ep in found if dist_name(ep).lower() == DISTRIBUTION]
    others = sorted(
        (ep for ep in found if dist_name(ep).lower() != DISTRIBUTION),
        key=lambda ep: (dist_name(ep).lower(), ep.name),
    )
    if not own:
        log.warning(
            "eventrelay's installed metadata lists no %r entry points (an install older than "
            "them): using the built-in vendors; reinstall eventrelay (pip install -e .) to fix",
            ENTRY_POINT_GROUP,
        )
        own = [
            metadata.EntryPoint(name, value, ENTRY_POINT_GROUP)
            for name, value in BUILTIN_ENTRY_POINTS.items()
        ]
    return own + others


def check_vendor_class(ep: metadata.EntryPoint, cls: Any, family: bool) -> type[Vendor]:
    """`cls` if it is a usable vendor for entry point `ep`; BrokenVendor says what is wrong."""
    if not (isinstance(cls, type) and issubclass(cls, Vendor)):
        raise BrokenVendor(f"{cls!r} is not a subclass of eventrelay's Vendor")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not VENDOR_NAME.fullmatch(name):
        raise BrokenVendor(
            f"{cls.__qualname__}.name must be lower case letters, digits and single "
            f"underscores (it names queues and settings), got {name!r}"
        )
    if not family and name != ep.name:
        raise BrokenVendor(f"{cls.__qualname__}.name is {name!r}, not {ep.name!r}")
    if family and not (name == ep.name or name.startswith(ep.name + "_")):
        raise BrokenVendor(f"{name!r} is not {ep.name!r} or {ep.name + '_<name>'!r}")
    missing = [attr for attr in ("operations", "settings_class") if not hasattr(cls, attr)]
    missing += sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise BrokenVendor(f"{cls.__qualname__} does not define {', '.join(missing)}")
    return cls


def _why(exc: Exception) -> str:
    return redact(f"{type(exc).__name__}: {exc}", 300)


Family = Callable[[], Iterable[Any]]


class VendorRegistry(Mapping[str, type[Vendor]]):
    """Vendor name → class (thread-safe). Entry points are loaded once, on first use; a
    family's function is asked again at each look-up, since what it makes comes from the
    environment (`WEBHOOK_<NAME>_URL`) and costs a scan of it (tens of microseconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: tuple[dict[str, type[Vendor]], list[tuple[Any, Family]]] | None = None
        self._broken: dict[str, str] = {}
        self._reported: set[tuple[str, str]] = set()

    def _entry_points_loaded(self) -> tuple[dict[str, type[Vendor]], list[tuple[Any, Family]]]:
        loaded = self._loaded
        if loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = self._load()
                loaded = self._loaded
        return loaded

    def _load(self) -> tuple[dict[str, type[Vendor]], list[tuple[Any, Family]]]:
        classes: dict[str, type[Vendor]] = {}
        families: list[tuple[Any, Family]] = []
        self._broken = {}
        for ep in _entry_points():
            try:
                obj: Any = ep.load()
                if not isinstance(obj, type) and callable(obj):
                    families.append((ep, obj))
                    continue
                if not isinstance(obj, type):
                    raise BrokenVendor(f"{ep.value} is neither a Vendor subclass nor a function")
                cls = check_vendor_class(ep, obj, family=False)
            except Exception as exc:  # a plugin's bug must not take the other vendors down
                self._report(ep.name, f"{ep.value}: {_why(exc)}", self._broken)
                continue
            if cls.name in classes:
                self._report(cls.name, self._taken(ep, classes[cls.name]), self._broken)
                continue
            classes[cls.name] = cls
        return classes, families

    def _current(self) -> tuple[dict[str, type[Vendor]], dict[str, str]]:
        static, families = self._entry_points_loaded()
        classes, broken = dict(static), dict(self._broken)
        for ep, make in families:
            try:
                made = [check_vendor_class(ep, cls, family=True) for cls in make()]
            except Exception as exc:
                self._report(ep.name, f"{ep.value}: {_why(exc)}", broken)
                continue
            for cls in made:
                if cls.name in classes:
                    self._report(cls.name, self._taken(ep, classes[cls.name]), broken)
                else:
                    classes[cls.name] = cls
        return dict(sorted(classes.items())), broken

    @staticmethod
    def _taken(ep: Any, taken: type[Vendor]) -> str:
        where = f"{taken.__module__}.{taken.__qualname__}"
        return f"{ep.value}: the name {taken.name!r} is taken by {where}"

    def _report(self, name: str, why: str, into: dict[str, str]) -> None:
        into[name] = why
        if (name, why) not in self._reported:  # once per process, not at every look-up
            self._reported.add((name, why))
            log.error("vendor entry point %r failed to load: %s", name, why)

    def broken(self) -> dict[str, str]:
        return self._current()[1]

    def refresh(self) -> None:
        with self._lock:
            self._loaded, self._broken = None, {}

    @property
    def loaded(self) -> bool:
        """Whether the entry points have been read (never at import)."""
        return self._loaded is not None

    def __getitem__(self, name: str) -> type[Vendor]:
        return self._current()[0][name]

    def __contains__(self, name: object) -> bool:
        return name in self._current()[0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current()[0])

    def __len__(self) -> int:
        return len(self._current()[0])

    def __repr__(self) -> str:
        names = ", ".join(self._current()[0]) if self.loaded else "not loaded"
        return f"<VendorRegistry {names}>"


VENDOR_CLASSES = VendorRegistry()


def vendor_names() -> list[str]:
    return sorted(VENDOR_CLASSES)


def broken_vendors() -> dict[str, str]:
    """Entry point name → why it gave no vendor (import error, wrong type, name taken)."""
    return VENDOR_CLASSES.broken()


def refresh_vendors() -> None:
    """Read the entry points and the environment again (tests; a plugin installed at run
    time). Vendor instances already made are dropped too."""
    VENDOR_CLASSES.refresh()
    get_vendor.cache_clear()


def make_vendor(name: str) -> Vendor:
    """A new instance of the vendor called `name`, configured from the environment.

    Raises:
        InvalidJob: no such vendor (listing the valid ones, and why a plugin failed to load).
        ConfigurationError: a setting of the vendor holds a value it cannot take, naming it.
    """
    cls = VENDOR_CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        from eventrelay.worker.vendors.webhook import unknown_endpoint_hint

        why = broken_vendors().get(name) if isinstance(name, str) else None
        message = f"unknown vendor {name!r}; valid vendors: {', '.join(vendor_names())}"
        hint = unknown_endpoint_hint(name) if isinstance(name, str) else None
        if hint:
            message = f"unknown vendor {name!r} ({hint}); valid vendors: " + ", ".join(
                vendor_names()
            )
        if why:
            message = f"vendor {name!r} failed to load ({why}); valid vendors: " + ", ".join(
                vendor_names()
            )
        raise InvalidJob([FieldError("vendor", message)])
    try:
        return cls()
    except ValidationError as exc:
        # Never the value given (a secret, a URL with a password): the variable and the rule.
        prefix = str(cls.settings_class.model_config.get("env_prefix", ""))
        problems = [
            (
                f"{prefix}{err['loc'][0]}".upper() if err["loc"] else None,
                str(err["msg"]).removeprefix("Value error, "),
            )
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise ConfigurationError(
            f"invalid {name} setting(s): "
            + "; ".join(f"{env}: {msg}" if env else msg for env, msg in problems),
            env_var=problems[0][0] if problems else None,
        ) from None


class VendorInstances:
    """`get_vendor(name)`: one instance per vendor and process, made on first use. An
    instance whose `settings_changed()` says its environment changed (a webhook endpoint's URL
    or secret set anew, as tests do) is made again; `get_vendor.cache_clear()` drops all."""

    def __init__(self) -> None:
        self._made: dict[str, Vendor] = {}

    def __call__(self, name: str) -> Vendor:
        vendor = self._made.get(name) if isinstance(name, str) else None
        if vendor is None or vendor.settings_changed():
            vendor = self._made[name] = make_vendor(name)
        return vendor

    def cache_clear(self) -> None:
        self._made.clear()


get_vendor = VendorInstances()


__all__ = [
    "ENTRY_POINT_GROUP",
    "VENDOR_CLASSES",
    "Vendor",
    "broken_vendors",
    "get_vendor",
    "refresh_vendors",
    "vendor_names",
]
