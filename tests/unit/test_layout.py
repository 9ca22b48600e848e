"""The package's shape as a user meets it: one import name, nothing at import, no circles."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Import name -> folder, as pyproject's package-dir maps them.
FOLDERS = {
    "eventrelay": ROOT / "eventrelay",
    "eventrelay.worker": ROOT / "worker",
    "eventrelay.models": ROOT / "models",
    "eventrelay.migrations": ROOT / "migrations",
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for prefix, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if prefix == "eventrelay" and parts:
                name = ".".join(["eventrelay", *parts])
            else:
                name = ".".join([prefix, *parts]) if parts else prefix
            if "versions" not in rel.parts:
                found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path], this: str) -> set[str]:
    """eventrelay modules this one imports, at any depth but `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text())
    type_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for child in node.body
        for n in ast.walk(child)
    }
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1]
                    + ([base] if base else [])
                )
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        out.update(n for n in names if n in modules and n != this)
    return out


def test_no_import_circle_between_eventrelay_modules() -> None:
    modules = _modules()
    graph = {m: _imports(p, modules, m) for m, p in modules.items()}
    # Tarjan's strongly connected components: any component of two or more is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert len(modules) > 40, "the walk found too few modules to mean anything"
    assert not circles, f"import circles: {circles}"


def test_the_circle_check_sees_a_circle() -> None:
    # The check above must be able to fail: the producer really does import publish.
    modules = _modules()
    api = _imports(
        modules["eventrelay.worker.producer.api"], modules, "eventrelay.worker.producer.api"
    )
    assert "eventrelay.worker.producer.publish" in api


# Which folder may import which (besides itself): the README's table. `worker/*.py` are the
# modules directly in worker/ (config, errors, redact, logs).
BELOW_OPS = {"producer", "fleet", "vendors", "worker/*.py", "models"}
MAY_IMPORT: dict[str, set[str]] = {
    # The doors: `import eventrelay` / `python -m eventrelay`, and `celery -A eventrelay.worker`.
    "eventrelay": {"ops", "producer", "worker/*.py"},
    "worker/__init__.py": {"engine"},
    # The test kit for apps (a pytest plugin): drives the engine like a worker, in-process.
    "testing": {"ops", "engine", "integrations", *BELOW_OPS},
    "dev": {"ops", "engine", "integrations", *BELOW_OPS},
    "ops": {"engine", "migrations", *BELOW_OPS},
    "engine": BELOW_OPS,
    # The Django admin is an operator's console: it acts through ops/operations.py, as the CLI.
    "integrations": {"ops", *BELOW_OPS},
    "producer": {"fleet", "vendors", "worker/*.py", "models"},
    "fleet": {"vendors", "worker/*.py", "models"},
    "vendors": {"worker/*.py", "models"},
    "migrations": {"worker/*.py", "models"},
    "worker/*.py": {"models"},
    "models": set(),
}


def _folder(module: str) -> str:
    parts = module.split(".")
    if parts[:2] == ["eventrelay", "models"]:
        return "models"
    if parts[:2] == ["eventrelay", "migrations"]:
        return "migrations"
    if parts[:2] == ["eventrelay", "testing"]:
        return "testing"
    if parts[:2] != ["eventrelay", "worker"]:
        return "eventrelay"
    if len(parts) == 2:
        return "worker/__init__.py"
    return parts[2] if parts[2] in MAY_IMPORT else "worker/*.py"


def _revisions() -> dict[str, Path]:
    return {
        f"eventrelay.migrations.versions.{path.stem}": path
        for path in (ROOT / "migrations" / "versions").glob("*.py")
    }


def _edges_outside_the_table(modules: dict[str, Path]) -> list[str]:
    known = {**modules, **_revisions()}
    wrong = []
    for module, path in sorted(known.items()):
        here = _folder(module)
        for imported in sorted(_imports(path, known, module)):
            # A package's own __init__ runs whatever is imported from it and imports nothing
            # at import time (test_importing_the_producer_api_... holds that).
            if imported in ("eventrelay", "eventrelay.worker") or imported.startswith(module + "."):
                continue
            there = _folder(imported)
            if there != here and there not in MAY_IMPORT[here]:
                wrong.append(f"{module} ({here}) imports {imported} ({there})")
    return wrong


def test_every_import_between_folders_is_in_the_layering_table() -> None:
    wrong = _edges_outside_the_table(_modules())
    assert not wrong, "imports outside the README's layering table:\n" + "\n".join(wrong)


def test_the_layering_check_sees_an_upward_import(tmp_path: Path) -> None:
    modules = _modules()
    upward = tmp_path / "session.py"
    upward.write_text(
        (ROOT / "models" / "session.py").read_text()
        + "\n\ndef _later() -> None:\n    from eventrelay.worker.engine import pump  # noqa\n"
    )
    wrong = _edges_outside_the_table({**modules, "eventrelay.models.session": upward})
    assert any(
        "eventrelay.models.session (models) imports eventrelay.worker.engine.pump" in w
        for w in wrong
    ), wrong


def _setuptools_table(root: Path) -> dict[str, Any]:
    table: dict[str, Any] = tomllib.loads((root / "pyproject.toml").read_text())["tool"][
        "setuptools"
    ]
    return table


def _folders_with_init(root: Path, package_dir: dict[str, str]) -> set[str]:
    """Import names of every folder with an `__init__.py` under the package-dir mapping."""
    found = set()
    for name, folder in package_dir.items():
        base = root / folder
        for init in base.rglob("__init__.py"):
            found.add(".".join([name, *init.parent.relative_to(base).parts]))
    return found


def _unlisted_and_stale(root: Path) -> tuple[set[str], set[str]]:
    table = _setuptools_table(root)
    found = _folders_with_init(root, table["package-dir"])
    listed = set(table["packages"])
    return found - listed, listed - found


def test_pyproject_packages_are_exactly_the_folders_with_an_init() -> None:
    # A package missing from the list imports in development and is missing from the wheel.
    unlisted, stale = _unlisted_and_stale(ROOT)
    assert not unlisted, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(unlisted)}"
    assert not stale, f"listed in pyproject.toml but no folder with __init__.py: {sorted(stale)}"


def test_the_packages_check_sees_a_new_unlisted_package(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    for folder in _setuptools_table(ROOT)["package-dir"].values():
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("*.pyc"))
    (tmp_path / "worker" / "vendors" / "acme").mkdir()
    (tmp_path / "worker" / "vendors" / "acme" / "__init__.py").write_text("")
    shutil.rmtree(tmp_path / "worker" / "dev" / "mock")
    unlisted, stale = _unlisted_and_stale(tmp_path)
    assert unlisted == {"eventrelay.worker.vendors.acme"}
    assert stale == {"eventrelay.worker.dev.mock"}


def test_the_editable_install_is_a_plain_path_that_static_tools_follow() -> None:
    # pyright, Pylance, jedi and mypy read .pth paths; none of them runs an import hook.
    import eventrelay.worker.engine.tasks as module

    origin = Path(module.__file__ or "")
    if origin.resolve().is_relative_to(ROOT) and origin.is_relative_to(ROOT / "worker"):
        pytest.fail(
            "eventrelay.worker is imported from the checkout through an import hook; "
            "reinstall with `pip install -e .` (setup.cfg asks for the strict mode)"
        )
    root = origin.parents[3]  # <root>/eventrelay/worker/engine/tasks.py
    assert str(root) in sys.path, f"{root} is not a plain sys.path entry"
    pths = [p for entry in sys.path for p in Path(entry).glob("__editable__*eventrelay*.pth")]
    for pth in pths:
        assert not pth.read_text().lstrip().startswith("import"), f"{pth}: an import hook"


def _python(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_importing_the_producer_api_reads_no_settings_and_builds_no_app(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "EVENTRELAY_MAX_ATTEMPTS": "lots",  # deliberately broken
        "EVENTRELAY_BROKER_URL": "redis://127.0.0.1:1/0",
        "EVENTRELAY_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
    }
    code = """
import json, sys
import eventrelay
from eventrelay import enqueue, enqueue_many, InvalidJob, ConfigurationError
import eventrelay.worker.integrations.flask, eventrelay.worker.integrations.remote
import eventrelay.worker.producer
from eventrelay.worker.fleet import celery_app
from eventrelay.worker.config import get_settings
built_at_import = celery_app._app is not None
read_at_import = get_settings.cache_info().currsize > 0
try:
    enqueue("vtcdn", "send_event", {"user": {"email": "a@example.com"}, "event": {"update": {}}})
    error = None
except ConfigurationError as exc:
    error = {"message": str(exc), "env_var": exc.env_var}
print(json.dumps({"built": built_at_import, "read": read_at_import, "error": error,
                  "sockets": [m for m in sys.modules if m == "psycopg.connection_async"]}))
"""
    result = _python(code, env, tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["built"] is False and out["read"] is False
    assert out["error"] is not None, "the first enqueue must report the broken setting"
    assert out["error"]["env_var"] == "EVENTRELAY_MAX_ATTEMPTS"
    assert "EVENTRELAY_MAX_ATTEMPTS" in out["error"]["message"]


def test_celery_finds_the_app_as_eventrelay_worker_app(tmp_path: Path) -> None:
    result = _python(
        "import eventrelay.worker as w, celery; "
        "assert isinstance(w.app, celery.Celery); "
        "w.app.loader.import_default_modules(); "
        "print(sorted(t for t in w.app.tasks if t.startswith('eventrelay.')))",
        {**os.environ},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['eventrelay.deliver', 'eventrelay.ingest']"


@pytest.mark.slow
def test_pip_install_puts_only_eventrelay_into_site_packages(tmp_path: Path) -> None:
    # Built from a copy, so the build leaves nothing (build/, *.egg-info) in the checkout.
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", "tests", "docs"
        ),
    )
    target = tmp_path / "site"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    top = sorted(p.name for p in target.iterdir() if p.name != "bin")
    assert top[0] == "eventrelay" and len(top) == 2 and top[1].startswith("eventrelay-")
    assert top[1].endswith(".dist-info")
    # The installed copy works on its own, from a folder with clashing modules of an app.
    app = tmp_path / "app"
    app.mkdir()
    (app / "models.py").write_text("APP_MODELS = True\n")
    (app / "worker.py").write_text("APP_WORKER = True\n")
    (app / "migrations.py").write_text("APP_MIGRATIONS = True\n")
    env = {**os.environ, "PYTHONPATH": f"{app}{os.pathsep}{target}"}
    result = _python(
        "import models, worker, migrations, eventrelay.worker.ops.cli, eventrelay.models.delivery; "
        "from eventrelay.worker.ops.migrate import MIGRATIONS_DIR; "
        "assert models.APP_MODELS and worker.APP_WORKER and migrations.APP_MIGRATIONS; "
        "print(sorted(p.name for p in (MIGRATIONS_DIR / 'versions').glob('0*.py')))",
        env,
        app,
    )
    assert result.returncode == 0, result.stderr
    assert "0001_initial_schema.py" in result.stdout
    assert (target / "eventrelay" / "worker" / "fleet" / "ratelimit.lua").is_file()
