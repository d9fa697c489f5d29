"""Check that the lock file pins every requirement of pyproject.toml (dependencies and the dev extra) at a version
inside its range; exit 1 naming what is missing, with the fix (`make lock`).

Usage: python tools/check_lock.py [pyproject.toml] [requirements/dev.lock]
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pins(lock_text: str) -> dict[str, str]:
    """`{canonical name: version}` of the `name==version` lines of a requirements lock."""
    found: dict[str, str] = {}
    for line in lock_text.splitlines():
        match = _PIN.match(line)
        if match:
            found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def requirements(pyproject_text: str, extras: tuple[str, ...] = ("dev",)) -> list[Requirement]:
    """The project's dependencies and those of `extras`."""
    project = tomllib.loads(pyproject_text)["project"]
    listed = list(project.get("dependencies", []))
    for extra in extras:
        listed += project.get("optional-dependencies", {}).get(extra, [])
    return [Requirement(line) for line in listed]


def problems(pyproject_text: str, lock_text: str) -> list[str]:
    """One line per requirement the lock does not satisfy (empty when the lock fits pyproject.toml)."""
    locked = pins(lock_text)
    out = []
    for requirement in requirements(pyproject_text):
        version = locked.get(canonicalize_name(requirement.name))
        if version is None:
            out.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(version, prereleases=True):
            out.append(f"{requirement} but the lock has {requirement.name}=={version}")
    return out


def main(argv: list[str]) -> int:
    """Check the files named in argv (defaults: pyproject.toml, requirements/dev.lock); 0 when the lock fits."""
    pyproject = Path(argv[0] if argv else "pyproject.toml")
    lock = Path(argv[1] if len(argv) > 1 else "requirements/dev.lock")
    found = problems(pyproject.read_text(), lock.read_text())
    for problem in found:
        print(f"{lock} is out of date: {problem} (run `make lock`)", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
