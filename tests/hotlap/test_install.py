"""Every install path gives a reward function the modules DeepRacer allows (deepracer-formats.md §1.1)."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from simulator.reward import DEEPRACER_REWARD_MODULES

REPO = Path(__file__).resolve().parents[2]


def runtime_requirements() -> set[str]:
    """Normalised names of pyproject.toml's [project].dependencies (what every install path installs)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = set()
    for requirement in project["dependencies"]:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        assert match, requirement
        names.add(re.sub(r"[-_.]+", "-", match.group(1)).lower())
    return names


def test_the_modules_deepracer_allows_are_runtime_dependencies() -> None:
    provided_by = importlib.metadata.packages_distributions()
    runtime = runtime_requirements()
    for module in DEEPRACER_REWARD_MODULES:
        if module in sys.stdlib_module_names:
            continue
        distributions = {re.sub(r"[-_.]+", "-", d).lower() for d in provided_by.get(module, [])}
        assert distributions, f"{module} is not installed"
        assert distributions & runtime, f"{module} ({distributions}) is not in pyproject.toml's [project].dependencies"


def test_the_images_install_the_runtime_dependencies() -> None:
    """The compose image (infra/Dockerfile) installs [project].dependencies, and the offline builder uses it,
    so the README install (pip install), the compose image and the offline image carry the same runtime."""
    dockerfile = (REPO / "infra" / "Dockerfile").read_text()
    assert "p['project']['dependencies']" in dockerfile and "-r /tmp/requirements.txt" in dockerfile
    offline = (REPO / "infra" / "build-offline-images.sh").read_text()
    assert "-f infra/Dockerfile" in offline


INSTALL_HINT = re.compile(r"pip install (?:-e )?['\"]?([A-Za-z0-9_.]+)\[([a-z0-9,-]+)\]")


def test_every_extra_a_user_is_told_to_install_exists_and_installs_from_the_checkout() -> None:
    """hotlap is not on PyPI: `pip install 'hotlap[car]'` would fetch someone else's package or fail, and a
    plain `pip install '.[car]'` replaces the editable install the quick start made. Every hint in the
    README, docs and messages is `pip install -e '.[EXTRA]'` with an extra pyproject.toml defines."""
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    files = [REPO / "README.md", *(REPO / "docs").glob("*.md"),
             *(p for package in ("hotlap", "shared", "simulator", "trainer") for p in (REPO / package).glob("*.py"))]
    hints = [(path.relative_to(REPO), line) for path in files for line in path.read_text().splitlines()
             if INSTALL_HINT.search(line)]
    assert len(hints) >= 5
    for path, line in hints:
        for match in INSTALL_HINT.finditer(line):
            where, names = match.group(1), match.group(2).split(",")
            assert where == "." and "-e " in match.group(0), f"{path}: {line.strip()}"
            assert set(names) <= extras, f"{path}: unknown extra in {line.strip()}"
