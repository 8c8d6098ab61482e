"""The house rules of docs/architecture.md, checked on the code itself: every module sits on a floor and imports
only from floors below its own (lazy imports inside functions included), no modules import each other in a circle,
and no module grows past 400 lines."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nearid", "generators", "storage", "flows")
MAX_LINES = 400

FLOORS: tuple[tuple[str, ...], ...] = (
    ("nearid", "nearid.common"),
    ("storage",),
    ("generators", "nearid.curation", "nearid.model", "nearid.evaluation.metrics", "nearid.visual"),
    ("nearid.training", "nearid.evaluation", "nearid.offline"),
    ("flows",),
    ("nearid.cli",),
)
"""Rooms from the ground floor up. A room is a package prefix (the longest one that matches names a module's room);
``nearid`` alone is the root module, which only holds the version. A room may import rooms on lower floors only."""

FLOOR_OF = {room: floor for floor, rooms in enumerate(FLOORS) for room in rooms}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def room_of(module: str) -> str:
    """The longest room prefix of ``module`` (``nearid`` matches the root module only)."""
    matches = [room for room in FLOOR_OF if module == room or (room != "nearid" and module.startswith(room + "."))]
    if not matches:
        raise AssertionError(f"{module} sits in no room of FLOORS: give it a floor in tests/test_architecture.py")
    return max(matches, key=len)


def imports_of(module: str) -> set[str]:
    """Project modules ``module`` imports anywhere in its code (module level or inside functions)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # ``import a.b.c`` of a name inside a module: the module itself
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_module_has_a_room() -> None:
    for module in MODULES:
        room_of(module)


def test_rooms_import_only_from_lower_floors() -> None:
    broken = []
    for module, imported in GRAPH.items():
        room = room_of(module)
        for target in sorted(imported):
            other = room_of(target)
            if other != room and FLOOR_OF[other] >= FLOOR_OF[room]:
                broken.append(f"{module} (floor {FLOOR_OF[room]}) imports {target} (floor {FLOOR_OF[other]})")
    assert not broken, "imports that do not go down a floor:\n" + "\n".join(broken)


def test_no_import_circles() -> None:
    """Tarjan's strongly connected components over the module graph; any component of two or more is a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in GRAPH[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert not circles, f"modules that import each other in a circle: {circles}"


@pytest.mark.parametrize("folder", [*PACKAGES, "tests", "benchmarks"])
def test_no_module_over_400_lines(folder: str) -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in sorted((ROOT / folder).rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules (over {MAX_LINES} lines): {long}"


def _modules_after(statement: str) -> set[str]:
    """The project and heavy-library modules loaded by running ``statement`` in a fresh interpreter."""
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_generators_and_storage_load_no_higher_floor() -> None:
    lower = [m for m in MODULES if m.split(".")[0] in ("generators", "storage")]
    loaded = _modules_after("import " + ", ".join(lower))
    higher = ("nearid.curation", "nearid.training", "nearid.evaluation", "nearid.offline", "nearid.cli", "flows")
    assert not sorted(m for m in loaded if m.startswith(higher))


def test_light_entry_points_load_no_heavy_library() -> None:
    loaded = _modules_after("import nearid, nearid.cli, flows, generators, storage, generators.registry")
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("torch", "diffusers", "transformers", "prefect"))
    assert not heavy, f"importing the CLI or a package face loads {heavy[:5]}"
