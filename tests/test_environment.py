"""environment.yml (conda) and pyproject.toml (pip) list the same packages with the same bounds."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent
# conda-forge names that differ from the PyPI names
CONDA_TO_PYPI = {"python-duckdb": "duckdb", "matplotlib-base": "matplotlib", "psycopg2": "psycopg2-binary"}
CONDA_ONLY = {"python", "pip"}


def split_requirement(requirement: str) -> tuple[str, str]:
    """'ibis-framework[duckdb]>=12.0,<13' -> ('ibis-framework', '>=12.0,<13')."""
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*(.*)$", requirement)
    name, spec = match.group(1), match.group(2).replace(" ", "")
    return name.lower().replace("_", "-"), spec


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + project["optional-dependencies"]["test"]
    return dict(split_requirement(r) for r in listed)


def environment_requirements() -> dict[str, str]:
    document = yaml.safe_load((ROOT / "environment.yml").read_text())
    found = {}
    for entry in document["dependencies"]:
        items = entry["pip"] if isinstance(entry, dict) else [entry]
        for item in items:
            if item.startswith("-e"):
                continue
            name, spec = split_requirement(item)
            if name not in CONDA_ONLY:
                found[CONDA_TO_PYPI.get(name, name)] = spec
    return found


def test_environment_yml_lists_the_same_packages_and_bounds_as_pyproject():
    pip_side, conda_side = pyproject_requirements(), environment_requirements()
    assert sorted(set(pip_side) - set(conda_side)) == [], "in pyproject.toml but not in environment.yml"
    assert sorted(set(conda_side) - set(pip_side)) == [], "in environment.yml but not in pyproject.toml"
    differing = {name: (pip_side[name], conda_side[name]) for name in pip_side if pip_side[name] != conda_side[name]}
    assert differing == {}, "version bounds differ (pyproject, environment.yml)"


def test_constraints_pin_every_dependency_exactly():
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pinned[name.lower().replace("_", "-")] = version
    for name in pyproject_requirements():
        assert name in pinned, f"{name} is not pinned in constraints.txt"
    assert pinned["sqlglot"].startswith("28."), "ibis-framework 12 needs sqlglot 28.x"
