"""The package layering of STYLE.md, checked by walking every module's imports.

losses/ imports only torch (and the standard library); detectors/ may use losses/ but never study/;
nothing outside study/ imports study/; every ray import lives in the study/tune/ package and every
mlflow import in study/tracking/; there are no import cycles between the project's modules; no module
of study/ is longer than 400 lines (one concept per file).
"""

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("detectors", "losses", "study")
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, package: str | None = None) -> set[str]:
    """Absolute module names a file imports, including imports inside functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    if package is None:
        package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base)
                source = f"{prefix}.{node.module}" if node.module else prefix
            else:
                source = node.module
            found.add(source)
            # `from pkg import name` may import the submodule pkg.name.
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("name", sorted(n for n in MODULES if top(n) == "losses"))
def test_losses_import_only_torch_and_the_standard_library(name):
    foreign = {m for m in imports_of(MODULES[name]) if top(m) not in STDLIB | {"torch", "losses"}}
    assert not foreign, f"{name} imports {sorted(foreign)}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if top(n) != "study"))
def test_nothing_outside_study_imports_study(name):
    assert not {m for m in imports_of(MODULES[name]) if top(m) == "study"}


@pytest.mark.parametrize(("library", "home"), [("ray", "study.tune"), ("mlflow", "study.tracking")])
def test_each_service_library_is_imported_in_one_package(library, home):
    importers = sorted(n for n, p in MODULES.items() if any(top(m) == library for m in imports_of(p)))
    outside = [n for n in importers if n != home and not n.startswith(home + ".")]
    assert not outside, f"{library} imported outside {home}: {outside}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if top(n) == "study"))
def test_study_modules_hold_one_concept_each(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= 400, f"{name} has {lines} lines; split it by concept"


def test_no_module_imports_torchvision():
    importers = sorted(n for n, p in MODULES.items() if any(top(m) == "torchvision" for m in imports_of(p)))
    assert not importers


def test_project_modules_have_no_import_cycles():
    graph = {name: {m for m in imports_of(path) if m in MODULES and m != name} for name, path in MODULES.items()}
    # A package's __init__ re-exporting its own submodules is not a cycle worth failing on.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not d.startswith(name + ".")}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


# ---------------------------------------------------------------------------------------------
# The detector contract: only detectors/zoo.py and a family's own folder may name a family.

FAMILY_FOLDERS = sorted(p.parent.name for p in (ROOT / "detectors").glob("*/family.py"))
FAMILY_BLIND = sorted(
    n for n in MODULES
    if n.startswith(("detectors.engine", "study")) or n in ("detectors.model_info", "detectors.distillation")
)


def family_references(path: Path, package: str | None = None) -> set[str]:
    """Family modules ``path`` imports or names in code (module paths in strings, identifiers)."""
    families = "|".join(FAMILY_FOLDERS)
    found = {m for m in imports_of(path, package) if m.split(".")[:2][-1] in FAMILY_FOLDERS and top(m) == "detectors"}
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.update(m.group(0) for m in re.finditer(rf"detectors[./]({families})\b(?:[./]\w+)*", node.value))
        elif isinstance(node, ast.Name) and re.search(families, node.id, re.IGNORECASE):
            found.add(node.id)
        elif isinstance(node, ast.Attribute) and re.search(families, node.attr, re.IGNORECASE):
            found.add(node.attr)
    return found


def test_the_family_folders_are_found():
    assert "yolov5" in FAMILY_FOLDERS  # otherwise the test below checks nothing


@pytest.mark.parametrize("name", FAMILY_BLIND)
def test_engine_model_info_distillation_and_study_never_name_a_family(name):
    assert not family_references(MODULES[name]), (
        f"{name} names {sorted(family_references(MODULES[name]))}: reach families through detectors.zoo"
    )


def test_the_family_check_catches_an_import_a_module_string_and_a_class(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from detectors.yolov5.loss import YOLOv5Loss\n"
                     "MODULE = 'detectors.yolov5.weights'\n"
                     "loss = YOLOv5Loss\n")
    assert {"detectors.yolov5.loss", "detectors.yolov5.weights", "YOLOv5Loss"} <= \
        family_references(probe, package="probe")
