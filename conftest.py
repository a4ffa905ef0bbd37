"""Shared test set-up: a small generated demo dataset with its warehouse, in a temporary project home.

It serves the tests under ``tests/`` (the ``demo_home`` fixture) and the notebook checks that
``pytest --nbval-lax notebooks`` runs: notebooks read the warehouse of the project home, so the home is
made before the first notebook cell runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from crm_analytics import paths

# Fixture notebooks that fail on purpose (runner tests) are run by those tests, not collected by nbval.
collect_ignore_glob = ["tests/notebooks/*.ipynb"]

DEMO_CUSTOMERS = 5_000
DEMO_SEED = 42

_demo_home: Path | None = None


def ensure_demo_home() -> Path:
    """Generate the session's demo home once and point ``CRM_ANALYTICS_HOME`` at it; return it."""
    global _demo_home
    if _demo_home is None:
        from crm_analytics import demo

        home = Path(tempfile.mkdtemp(prefix="crm_demo_home_"))
        os.environ[paths.HOME_ENV] = str(home)
        from crm_analytics.cleansing import build_clean_warehouse

        demo.generate(DEMO_CUSTOMERS, seed=DEMO_SEED)
        build_clean_warehouse(as_of=demo.DEFAULT_AS_OF)  # as `make demo` builds it
        _demo_home = home
    os.environ[paths.HOME_ENV] = str(_demo_home)
    return _demo_home


@pytest.fixture(scope="session")
def demo_home() -> Path:
    """A project home holding a 5,000-customer demo dataset (seed 42), its ground truth and its warehouse.

    Sets ``CRM_ANALYTICS_HOME``, so ``paths.warehouse_path()`` and ``paths.ground_truth_dir()`` point into it.
    """
    return ensure_demo_home()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Notebook cells collected by nbval read the demo warehouse: make it before the first one runs."""
    if str(item.path).endswith(".ipynb"):
        ensure_demo_home()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the generated demo home."""
    if _demo_home is not None:
        shutil.rmtree(_demo_home, ignore_errors=True)
