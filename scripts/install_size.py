"""MB on disk of an install: the distributions a set of requirements pulls in (transitively), as installed here.

Sizes come from each installed distribution's RECORD (the files pip wrote), so nothing is downloaded; a
distribution shared by two requirements counts once.

    .venv/bin/python scripts/install_size.py                       # runtime, runtime + each extra, + all extras
    .venv/bin/python scripts/install_size.py -r requirements.txt   # what a requirements file installs
"""

from __future__ import annotations

import argparse
import json
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def closure(requirements: list[Requirement]) -> tuple[set[str], set[str]]:
    """(installed distributions, missing names) that `requirements` need, following extras and markers."""
    seen: set[tuple[str, frozenset[str]]] = set()
    found: set[str] = set()
    missing: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in requirements]
    while todo:
        req, extras = todo.pop()
        key = (canonicalize_name(req.name), extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            missing.add(key[0])
            continue
        found.add(key[0])
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in (extras or {""})):
                todo.append((sub, frozenset(sub.extras)))
    return found, missing


def size_bytes(name: str) -> int:
    dist = distribution(name)
    total = 0
    for file in dist.files or []:
        path = Path(dist.locate_file(file))
        if path.is_file():
            total += path.stat().st_size
    return total


def report(label: str, requirements: list[Requirement]) -> dict:
    found, missing = closure(requirements)
    mb = sum(size_bytes(n) for n in found) / 1e6
    return {"install": label, "mb": round(mb, 1), "distributions": len(found), "not_installed": sorted(missing)}


def _file_requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-r", dest="files", action="append", type=Path, help="a requirements file (repeatable)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    if args.files:
        reqs = [r for f in args.files for r in _file_requirements(f)]
        rows.append(report(" + ".join(str(f) for f in args.files), reqs))
    else:
        project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
        runtime = [Requirement(r) for r in project["dependencies"]]
        extras = {k: [Requirement(r) for r in v if not r.startswith("clipapp[")]
                  for k, v in project["optional-dependencies"].items() if k not in ("dev", "all")}
        rows.append(report("runtime", runtime))
        for name, reqs in extras.items():
            rows.append(report(f"runtime + [{name}]", runtime + reqs))
        rows.append(report(f"runtime + [{','.join(extras)}]", runtime + [r for v in extras.values() for r in v]))
    for row in rows:
        print(json.dumps(row) if args.json else f"{row['mb']:8.1f} MB  {row['distributions']:4d} distributions  "
              f"{row['install']}" + (f"  (not installed: {', '.join(row['not_installed'])})"
                                     if row["not_installed"] else ""))


if __name__ == "__main__":
    main()
