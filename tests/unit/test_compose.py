"""docker-compose.yml and the Dockerfile describe a deployment that can actually run.

No Docker engine is needed: the compose file is parsed with PyYAML, every command of the
eventrelay image is parsed by the real `eventrelay` click group (so a renamed command or a
misspelt option fails here, not at `docker compose up`), interpolation is resolved the way
Compose does it, and the Dockerfile's COPY sources are checked against the repository.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from pydantic import SecretStr

from eventrelay.worker.ops.cli import cli

REPO = Path(__file__).resolve().parents[2]
COMPOSE_PATH = REPO / "docker-compose.yml"
DOCKERFILE_PATH = REPO / "Dockerfile"
DOCKERIGNORE_PATH = REPO / ".dockerignore"

REQUIRED_SERVICES = {
    "redis",
    "postgres",
    "migrate",
    "worker",
    "scheduler",
    "flower",
    "metrics",
    "mock-vendors",
}
# Long-running processes that need the schema and both backends before they start.
AFTER_MIGRATE = ("worker", "scheduler", "flower", "metrics")
REQUIRED_SECRETS = ("POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH")
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "AUTH")

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}; $$ is a literal $.
INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def _load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_PATH.read_text())


COMPOSE = _load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE.get("services") or {}


def _argv(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def _eventrelay_image_services() -> list[str]:
    """Services that run the image built from our Dockerfile (their commands are ours)."""
    return sorted(name for name, svc in SERVICES.items() if "build" in svc)


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _interpolate(value: str, host_env: dict[str, str]) -> str:
    """Resolve Compose interpolation against `host_env` (raises on an unmet `:?`)."""

    def replace(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        current = host_env.get(name)
        if op in (":-", ":?") and not current or op in ("-", "?") and current is None:
            if op.endswith("?"):
                raise LookupError(f"{name}: {arg}")
            return arg
        return current or ""

    return INTERPOLATION.sub(replace, value)


def _container_env(service: dict[str, Any], host_env: dict[str, str]) -> dict[str, str]:
    """The environment Compose gives the container: a key without a value is taken from the
    host, or left out when the host does not have it."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    resolved = {}
    for key, value in env.items():
        if value is None:
            if key in host_env:
                resolved[key] = host_env[key]
        else:
            resolved[key] = _interpolate(str(value), host_env)
    return resolved


def _resolve_eventrelay_command(argv: list[str]) -> tuple[list[str], click.Command, list[str]]:
    """(sub-command path, the click command, its own arguments) for `eventrelay ...`."""
    assert argv[0] == "eventrelay", argv
    path: list[str] = []
    command: click.Command = cli
    rest = argv[1:]
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        if sub is None:
            break
        path.append(rest.pop(0))
        command = sub
    return path, command, rest


def _vendor_classes() -> dict[str, Any]:
    from eventrelay.worker.vendors import VENDOR_CLASSES

    return dict(VENDOR_CLASSES)


def _vendor_env_vars() -> set[str]:
    """Every vendor variable an operator must be able to set: the base URL, each secret, and
    each setting whose default the vendor changes (INFOBIP_RATE_LIMIT)."""
    from eventrelay.worker.vendors.base import VendorSettings

    names = set()
    for cls in _vendor_classes().values():
        settings_cls = cls.settings_class
        prefix = settings_cls.model_config.get("env_prefix", "")
        base_fields = VendorSettings.model_fields
        for field_name, info in settings_cls.model_fields.items():
            is_secret = info.annotation is not None and SecretStr in getattr(
                info.annotation, "__args__", (info.annotation,)
            )
            overrides_default = (
                field_name not in base_fields or info.default != base_fields[field_name].default
            )
            if field_name == "base_url" or is_secret or overrides_default:
                names.add(f"{prefix}{field_name}".upper())
    return names


# ---- the file itself ----------------------------------------------------------------------------


def test_compose_file_is_valid_yaml_in_the_compose_spec_shape() -> None:
    assert isinstance(COMPOSE, dict)
    assert "version" not in COMPOSE, "the compose spec has no `version:` key"
    assert isinstance(SERVICES, dict) and SERVICES


def test_every_required_service_exists() -> None:
    assert set(SERVICES) >= REQUIRED_SERVICES, REQUIRED_SERVICES - set(SERVICES)


def test_images_are_pinned_to_the_expected_major_versions() -> None:
    assert SERVICES["redis"]["image"] == "redis:7"
    assert SERVICES["postgres"]["image"] == "postgres:16"
    for name in ("migrate", *AFTER_MIGRATE, "mock-vendors"):
        assert "build" in SERVICES[name], f"{name} must run the eventrelay image"


# ---- start-up order -----------------------------------------------------------------------------


def test_postgres_has_a_pg_isready_healthcheck_and_a_named_volume() -> None:
    postgres = SERVICES["postgres"]
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))
    assert postgres["environment"]["POSTGRES_DB"] == "eventrelay"
    volumes = postgres.get("volumes") or []
    named = [v.split(":", 1)[0] for v in volumes if isinstance(v, str)]
    assert any(n in (COMPOSE.get("volumes") or {}) for n in named), volumes


def test_redis_has_a_redis_cli_ping_healthcheck() -> None:
    test = SERVICES["redis"]["healthcheck"]["test"]
    joined = test if isinstance(test, str) else " ".join(test)
    assert "redis-cli" in joined and "ping" in joined


def test_migrate_is_a_one_shot_that_waits_for_healthy_postgres() -> None:
    migrate = SERVICES["migrate"]
    assert _argv(migrate) == ["eventrelay", "migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    # A restarting migrate never "completes", so the services after it would never start.
    assert migrate.get("restart", "no") == "no"


@pytest.mark.parametrize("name", AFTER_MIGRATE)
def test_long_running_service_waits_for_healthy_backends_and_a_finished_migration(
    name: str,
) -> None:
    depends_on = SERVICES[name]["depends_on"]
    assert isinstance(depends_on, dict), "the long form is needed to state conditions"
    assert depends_on["redis"]["condition"] == "service_healthy"
    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"


def test_mock_vendors_runs_only_in_the_dev_profile() -> None:
    assert SERVICES["mock-vendors"].get("profiles") == ["dev"]
    for name, service in SERVICES.items():
        if name != "mock-vendors":
            assert "dev" not in (service.get("profiles") or []), name


def test_the_expected_processes_run_with_the_expected_ports() -> None:
    assert _argv(SERVICES["worker"])[:2] == ["eventrelay", "worker"]
    assert "--concurrency" in _argv(SERVICES["worker"])
    assert _argv(SERVICES["scheduler"]) == ["eventrelay", "scheduler"]
    assert _argv(SERVICES["metrics"])[:2] == ["eventrelay", "metrics"]
    assert _argv(SERVICES["flower"])[:4] == ["celery", "-A", "eventrelay.worker", "flower"]
    mock_argv = _argv(SERVICES["mock-vendors"])
    assert mock_argv[:2] == ["eventrelay", "mock-vendors"]
    # Inside a container the mock must listen beyond loopback to be reachable by the worker.
    assert mock_argv[mock_argv.index("--host") + 1] == "0.0.0.0"
    for service, port in (("flower", "5555"), ("metrics", "9808")):
        published = [str(p).rsplit(":", 1)[-1] for p in SERVICES[service].get("ports") or []]
        assert port in published, (service, SERVICES[service].get("ports"))
        assert any(port in a for a in _argv(SERVICES[service])), _argv(SERVICES[service])


def test_the_per_vendor_worker_example_is_present_but_commented_out() -> None:
    text = COMPOSE_PATH.read_text()
    example = [line for line in text.splitlines() if "--vendors" in line and "infobip" in line]
    assert example and all(line.lstrip().startswith("#") for line in example)
    # The example's options are accepted by the real CLI too.
    argv = shlex.split(example[0].split("command:", 1)[1].strip(" []").replace(",", " "))
    path, command, rest = _resolve_eventrelay_command(argv)
    ctx = command.make_context(" ".join(["eventrelay", *path]), rest)
    assert ctx.params["vendors"] == "infobip" and ctx.params["concurrency"] == 2


# ---- every command is a real command ------------------------------------------------------------


def _command_cases() -> list[Any]:
    cases = []
    for name in _eventrelay_image_services():
        argv = _argv(SERVICES[name])
        marks = []
        if argv[:2] == ["eventrelay", "metrics"] and "metrics" not in cli.commands:
            marks.append(
                pytest.mark.xfail(
                    strict=False,
                    reason="`eventrelay metrics` is not in worker/cli.py yet",
                )
            )
        cases.append(pytest.param(name, marks=marks, id=name))
    return cases


@pytest.mark.parametrize("name", _command_cases())
def test_service_command_is_a_real_command_with_accepted_options(name: str) -> None:
    argv = _argv(SERVICES[name])
    assert argv, f"{name} runs the eventrelay image and must say which process it is"
    if argv[0] == "celery":
        _assert_celery_command(argv)
        return
    path, command, rest = _resolve_eventrelay_command(argv)
    assert path, f"{argv}: no such eventrelay command"
    assert not isinstance(command, click.Group), f"{argv}: names a group, not a command"

    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output

    # Parse (without running) the exact argv: unknown options and bad values raise here.
    ctx = command.make_context(" ".join(["eventrelay", *path]), list(rest))
    for param, value in ctx.params.items():
        # `worker` hands unknown options through to Celery; a misspelt eventrelay option
        # (--concurency) would vanish there instead of failing.
        if isinstance(value, tuple):
            assert not any(str(v).startswith("-") for v in value), (param, value)
    if ctx.params.get("vendors"):
        from eventrelay.worker.vendors import vendor_names

        assert set(ctx.params["vendors"].split(",")) <= set(vendor_names())


def _assert_celery_command(argv: list[str]) -> None:
    import celery

    assert argv[1:3] == ["-A", "eventrelay.worker"], argv
    app_module = importlib.import_module(argv[2])
    assert isinstance(app_module.app, celery.Celery), (
        "`celery -A eventrelay.worker` needs eventrelay.worker.app"
    )

    subcommand = argv[3]
    assert subcommand == "flower", argv
    importlib.import_module("flower")
    # Celery finds `flower` through the celery.commands entry point the flower package installs.
    plugins = importlib.metadata.entry_points(group="celery.commands")
    assert "flower" in {ep.name for ep in plugins}
    # Flower parses its own options (tornado.options): each one used must exist.
    from flower.options import options as flower_options

    for arg in argv[4:]:
        assert arg.startswith("--"), arg
        option = arg[2:].split("=", 1)[0]
        assert option in flower_options, f"flower has no option --{option}"


def test_every_eventrelay_image_service_is_checked() -> None:
    # A new service on our image gets its command checked by the test above.
    assert set(AFTER_MIGRATE) | {"migrate", "mock-vendors"} <= set(_eventrelay_image_services())


# ---- environment and secrets --------------------------------------------------------------------


HOST_ENV = {"POSTGRES_PASSWORD": "pw-from-host", "FLOWER_BASIC_AUTH": "ops:pw-from-host"}


def test_database_and_broker_urls_point_at_the_compose_services() -> None:
    env = _container_env(SERVICES["worker"], HOST_ENV)
    assert env["EVENTRELAY_DATABASE_URL"] == (
        "postgresql+psycopg://eventrelay:pw-from-host@postgres:5432/eventrelay"
    )
    assert env["EVENTRELAY_BROKER_URL"] == "redis://redis:6379/0"


def test_every_eventrelay_service_shares_one_environment() -> None:
    envs = {name: SERVICES[name].get("environment") for name in _eventrelay_image_services()}
    first = envs[_eventrelay_image_services()[0]]
    assert all(env == first for env in envs.values()), "use the x-eventrelay anchor everywhere"


def test_every_vendor_variable_is_passed_through() -> None:
    expected = _vendor_env_vars()
    assert {
        "BOTSI_BASE_URL",
        "BOTSI_SECRET_KEY",
        "VTCDN_BASE_URL",
        "VTCDN_API_KEY",
        "INFOBIP_BASE_URL",
        "INFOBIP_API_KEY",
        "INFOBIP_RATE_LIMIT",
        "GRAVITYFIELD_BASE_URL",
        "GRAVITYFIELD_TOKEN",
        "GRAVITYFIELD_SITE_KEY",
    } <= expected
    for name in _eventrelay_image_services():
        env = SERVICES[name]["environment"]
        assert expected <= set(env), (name, expected - set(env))
        for var in expected:
            value = env[var]
            # Passed through: a bare key, or an interpolation of the same variable, no default.
            assert value is None or re.fullmatch(rf"\$\{{{var}:?-\}}", str(value)), (var, value)


def test_vendor_settings_keep_their_defaults_when_the_host_leaves_them_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`VAR: ${VAR:-}` would set "" in the container: that replaces Botsi's and vtcdn's
    documented base URLs and makes INFOBIP_RATE_LIMIT unparseable."""
    container_env = _container_env(SERVICES["worker"], HOST_ENV)
    vendor_vars = _vendor_env_vars()
    for var in vendor_vars:
        monkeypatch.delenv(var, raising=False)
    for var, value in container_env.items():
        if var in vendor_vars:
            monkeypatch.setenv(var, value)
    for cls in _vendor_classes().values():
        settings_cls = cls.settings_class
        settings = settings_cls()  # raises if a value does not parse
        for field_name, info in settings_cls.model_fields.items():
            if not isinstance(info.default, SecretStr) and info.default is not None:
                assert getattr(settings, field_name) == info.default, (cls.name, field_name)


def test_host_values_reach_the_container() -> None:
    host = {**HOST_ENV, "INFOBIP_RATE_LIMIT": "5", "BOTSI_SECRET_KEY": "from-host"}
    env = _container_env(SERVICES["worker"], host)
    assert env["INFOBIP_RATE_LIMIT"] == "5" and env["BOTSI_SECRET_KEY"] == "from-host"


@pytest.mark.parametrize("missing", REQUIRED_SECRETS)
def test_compose_refuses_to_start_without_a_required_secret(missing: str) -> None:
    host = {k: v for k, v in HOST_ENV.items() if k != missing}
    with pytest.raises(LookupError, match=missing):
        for value in _strings(SERVICES):
            _interpolate(value, host)


def test_required_secrets_always_use_the_required_form() -> None:
    found = {name: 0 for name in REQUIRED_SECRETS}
    for value in _strings(COMPOSE):
        for m in INTERPOLATION.finditer(value):
            name = m.group("name") or m.group("bare")
            if name in found:
                assert m.group("op") == ":?" and m.group("arg"), f"{m.group(0)} in {value!r}"
                found[name] += 1
    assert all(found.values()), found


def test_no_secret_has_a_literal_value_or_a_default() -> None:
    checked = 0
    for service_name, service in SERVICES.items():
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
        for key, value in env.items():
            if not any(word in key.upper() for word in SECRET_WORDS):
                continue
            checked += 1
            assert value is not None, f"{service_name}.{key}: pass it as ${{{key}:-}} or ${{...:?}}"
            assert re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}", str(value)), (
                f"{service_name}.{key}={value!r} is not an interpolation"
            )
    assert checked >= 6
    # Anywhere in the file: an interpolation of a secret-like variable has no default value,
    # and a URL's password is never written out.
    for value in _strings(COMPOSE):
        for m in INTERPOLATION.finditer(value):
            name = m.group("name") or ""
            if any(word in name for word in SECRET_WORDS) and m.group("op") in ("-", ":-"):
                assert not m.group("arg"), f"{m.group(0)}: a secret must have no default"
        for userinfo in re.findall(r"://[^/@\s]*:([^@\s]*)@", value):
            assert userinfo.startswith("${"), f"literal password in {value!r}"


def test_the_documented_mock_vendor_urls_are_the_ones_the_mock_serves() -> None:
    from eventrelay.worker.dev.mock.server import MockVendors

    documented = dict(
        re.findall(
            r"^#\s*export (\w+_BASE_URL)=(http://mock-vendors:8025/\S*)$",
            COMPOSE_PATH.read_text(),
            re.MULTILINE,
        )
    )
    with MockVendors(port=0) as mock:
        served = {
            k: v.replace(mock.url, "http://mock-vendors:8025") for k, v in mock.base_urls().items()
        }
    assert documented == served
    head = COMPOSE_PATH.read_text().split("\n\n", 1)[0]
    assert "POSTGRES_PASSWORD=" in head and "FLOWER_BASIC_AUTH=" in head


# ---- the image ----------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in DOCKERFILE_PATH.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current = f"{current} {line[:-1]}" if line.endswith("\\") else f"{current} {line}"
        if not line.endswith("\\"):
            instruction, _, args = current.strip().partition(" ")
            lines.append((instruction.upper(), args.strip()))
            current = ""
    return lines


DOCKERFILE = _dockerfile_instructions()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _copy_sources() -> list[str]:
    sources = []
    for instruction, args in DOCKERFILE:
        if instruction == "COPY":
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            sources += parts[:-1]
    return sources


def _copy_source_cases() -> list[Any]:
    cases = []
    for source in _copy_sources():
        marks = []
        if source.rstrip("/") == "README.md" and not (REPO / "README.md").exists():
            marks.append(pytest.mark.xfail(strict=False, reason="README.md is not written yet"))
        cases.append(pytest.param(source, marks=marks, id=source))
    return cases


@pytest.mark.parametrize("source", _copy_source_cases())
def test_dockerfile_copy_source_exists_and_is_not_dockerignored(source: str) -> None:
    assert (REPO / source.rstrip("/")).exists(), f"COPY {source}: no such file in the repo"
    for pattern in DOCKERIGNORE_PATH.read_text().splitlines():
        pattern = pattern.strip().rstrip("/")
        if pattern and not pattern.startswith(("#", "!")):
            assert not fnmatch.fnmatch(source.rstrip("/"), pattern), (source, pattern)


def test_the_image_copies_what_the_package_build_needs() -> None:
    copied = {s.rstrip("/") for s in _copy_sources()}
    assert {"pyproject.toml", "alembic.ini", "worker", "models", "migrations"} <= copied
    assert PYPROJECT["project"]["readme"] in copied
    for package, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items():
        assert folder in copied, f"package {package} ({folder}/) is not copied"


def test_the_image_is_python_311_slim_and_runs_as_a_non_root_user() -> None:
    assert DOCKERFILE[0] == ("FROM", "python:3.11-slim")
    users = [(n, args) for n, (i, args) in enumerate(DOCKERFILE) if i == "USER"]
    assert users, "the image must switch to a non-root user"
    last_user_at, last_user = users[-1]
    assert last_user.split(":")[0] not in ("root", "0")
    install_at = max(n for n, (i, a) in enumerate(DOCKERFILE) if i == "RUN" and "pip install" in a)
    assert last_user_at > install_at, "install as root, then drop privileges"


def test_the_image_installs_the_package_with_the_flower_extra() -> None:
    installs = [a for i, a in DOCKERFILE if i == "RUN" and "pip install" in a]
    assert installs, "the Dockerfile must pip install the package"
    assert any(
        "--no-cache-dir" in a and re.search(r"""["']?\.\[flower\]["']?""", a) for a in installs
    ), installs
    assert "flower" in PYPROJECT["project"]["optional-dependencies"]
    assert any(
        d.startswith("flower") for d in PYPROJECT["project"]["optional-dependencies"]["flower"]
    )


def test_compose_commands_are_not_swallowed_by_an_entrypoint() -> None:
    assert "ENTRYPOINT" not in [i for i, _ in DOCKERFILE]
    cmds = [a for i, a in DOCKERFILE if i == "CMD"]
    assert cmds and cmds[-1].startswith("["), "exec form, so signals reach the process"
    assert yaml.safe_load(cmds[-1])[0] == "eventrelay"


def test_the_package_installs_the_eventrelay_console_script() -> None:
    target = PYPROJECT["project"]["scripts"]["eventrelay"]
    assert target == "eventrelay.worker.ops.cli:main"
    module, _, attr = target.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    patterns = {p.strip().rstrip("/") for p in DOCKERIGNORE_PATH.read_text().splitlines()}
    for required in (
        ".venv",
        ".git",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        "*.db",
        ".env",
    ):
        assert required in patterns, required
