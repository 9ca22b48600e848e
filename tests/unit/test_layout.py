"""The package's shape as a user meets it: one import name, nothing at import, no circles."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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
from eventrelay.worker.engine import celery_app
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
            ".git", ".venv", ".typecheck", "build", "*.egg-info", "__pycache__", "tests", "docs"
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
