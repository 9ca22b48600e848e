"""Importing a benchmark module changes nothing in the importing process: a test that imports
one for a constant must keep running against the tests' database and Redis (it once did not:
every test after the history smoke test ran against the benchmark's database and failed)."""

from __future__ import annotations

import importlib
import os

import pytest


@pytest.mark.parametrize("module", ["bench", "history", "latency", "soak", "console"])
def test_importing_a_benchmark_leaves_the_environment_alone(module: str) -> None:
    before = dict(os.environ)
    importlib.import_module(f"tests.benchmarks.{module}")
    assert dict(os.environ) == before
