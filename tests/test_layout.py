"""The house rules of the package layout: imports only go downward (no circles), no NNCF below the adapters,
small modules and functions."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nncf_wcam"
# Floor of each folder (and top-level module): a module imports from its own folder or from lower floors only.
FLOORS = {
    "errors": 0,
    "version": 0,
    "generation": 1,
    "core": 2,
    "io": 2,
    "zoo": 3,
    "schema": 3,
    "deploy": 3,
    "evaluation": 4,
    "nncf_common": 4,
    "nncf2": 5,
    "nncf3": 5,
    "inc": 5,
    "cli": 6,
}
# Where NNCF may be imported: the adapters, what both adapters share of NNCF's torch backend, and the command line.
NNCF_ALLOWED = {"nncf_common", "nncf2", "nncf3", "cli"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def modules() -> list:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(name: str) -> str:
    """The folder (or top-level module) a module belongs to: nncf_wcam.core.maps -> core."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_names(path: Path) -> list:
    """Every module this file imports (module level or inside functions), absolute: `from X import y` gives X.y
    when that is a module of the package, else X."""
    known = {module_name(p) for p in modules()}
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; write `from nncf_wcam.... import ...`"
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.append(submodule if submodule in known else node.module)
    return names


def package_imports(path: Path) -> set:
    """The nncf_wcam modules this file imports (itself left out)."""
    own = module_name(path)
    return {name for name in imported_names(path) if (name == "nncf_wcam" or name.startswith("nncf_wcam.")) and name != own}


def graph() -> dict:
    return {module_name(p): package_imports(p) for p in modules()}


def test_every_folder_has_a_floor():
    units = {unit(module_name(p)) for p in modules()} - {"__init__"}
    assert units == set(FLOORS), f"folders without a floor or floors without a folder: {units ^ set(FLOORS)}"


def test_imports_go_only_to_the_own_folder_or_lower_floors():
    wrong = []
    for name, imports in graph().items():
        source = unit(name)
        if source == "__init__":
            continue  # the package's face: it names the public API of every floor (loaded lazily)
        for target in imports:
            other = unit(target)
            if other == "__init__":
                wrong.append(f"{name} imports the package itself ({target}): import the defining module")
            elif other != source and FLOORS[other] >= FLOORS[source]:
                wrong.append(f"{name} ({source}, floor {FLOORS[source]}) imports {target} ({other}, floor {FLOORS[other]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    edges = graph()
    state = {}

    def visit(name, path):
        state[name] = "open"
        for target in sorted(edges.get(name, ())):
            if state.get(target) == "open":
                raise AssertionError("import circle: " + " -> ".join([*path, name, target]))
            if target in edges and target not in state:
                visit(target, [*path, name])
        state[name] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [])


def test_nncf_is_imported_only_by_the_adapters_and_the_command_line():
    wrong = []
    for path in modules():
        name = module_name(path)
        if unit(name) in NNCF_ALLOWED:
            continue
        uses = [n for n in imported_names(path) if n == "nncf" or n.startswith("nncf.")]
        if uses:
            wrong.append(f"{name}: {sorted(set(uses))}")
    assert not wrong, "these modules must work with either NNCF generation: " + "; ".join(wrong)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_are_small(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{path.name}: {len(lines)} lines (at most {MAX_MODULE_LINES})"
    long = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                long.append(f"{node.name} ({length} lines)")
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"
