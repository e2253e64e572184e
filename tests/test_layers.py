"""Imports run one way: no cycle among the project's modules, and no import of a higher layer.

Every ``.py`` file under ``fl_poison/``, ``clients/``, ``strategies/`` and ``experiments/`` is
parsed with :mod:`ast`; every ``import`` and ``from ... import`` statement counts, wherever it
stands (inside functions and ``if TYPE_CHECKING:`` blocks too). Only imports of the project's own
modules are edges of the graph. The layers, lowest first (see ``DESIGN.md``):

====  ==========================  =============================================================
rank  layer                       modules
====  ==========================  =============================================================
0     core                        ``fl_poison.core.*``
1     clients, strategies         ``clients.*``, ``strategies.*`` (neither imports the other)
2     apps                        ``fl_poison.apps.*`` (the Flower ServerApp/ClientApp, node config)
3     launch, audit               ``fl_poison.launch`` (one experiment through ``flwr run``),
                                  ``fl_poison.warm_runtime`` (a SuperLink and Ray head runs share),
                                  ``fl_poison.forking_executor`` (task processes forked from a warm parent),
                                  ``fl_poison.audit.*`` (a trained model's audit; neither imports the other)
4     deploy, experiments         ``fl_poison.deploy.*``, ``experiments.*`` (neither imports the other)
5     cli                         ``fl_poison.cli`` (the ``fl-poison`` command: dispatch only)
====  ==========================  =============================================================

A module may import its own layer and any lower rank; two layers of the same rank never import
each other. A module of no layer fails the test, so a new top-level module or subpackage gets its
place here on purpose. The graph is read from the tree, so new files need no change here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("fl_poison", "clients", "strategies", "experiments")
LAYER_OF_PREFIX = {
    "fl_poison.core": "core",
    "clients": "clients",
    "strategies": "strategies",
    "fl_poison.apps": "apps",
    "fl_poison.launch": "launch",
    "fl_poison.warm_runtime": "launch",
    "fl_poison.forking_executor": "launch",
    "fl_poison.audit": "audit",
    "fl_poison.deploy": "deploy",
    "experiments": "experiments",
    "fl_poison.cli": "cli",
}
# Package roots whose own ``__init__`` holds only a docstring: placed with the core, by exact name only,
# so that a new module under them still needs a layer of its own.
LAYER_OF_PACKAGE_ROOT = {"fl_poison": "core"}
LAYER_RANK = {
    "core": 0,
    "clients": 1,
    "strategies": 1,
    "apps": 2,
    "launch": 3,
    "audit": 3,
    "deploy": 4,
    "experiments": 4,
    "cli": 5,
}

ImportGraph = dict[str, set[str]]


@dataclass(frozen=True)
class UpwardImport:
    """An import that runs against the layers.

    Attributes
    ----------
    importer : str
        The importing module.
    imported : str
        The imported module.
    importer_layer : str
        The importer's layer.
    imported_layer : str
        The imported module's layer: higher than the importer's, or a sibling of the same rank.
    """

    importer: str
    imported: str
    importer_layer: str
    imported_layer: str

    def __str__(self) -> str:
        return f"{self.importer} ({self.importer_layer}) imports {self.imported} ({self.imported_layer})"


def module_name(path: Path, root: Path) -> str:
    """The dotted module name of ``path`` (a package's ``__init__.py`` is the package).

    Parameters
    ----------
    path : Path
        A ``.py`` file under ``root``.
    root : Path
        The folder the top-level packages live in.
    """
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files(root: Path, folders: Iterable[str]) -> dict[str, Path]:
    """Every ``.py`` file under ``folders`` of ``root``, by module name.

    Parameters
    ----------
    root : Path
        The repository root.
    folders : Iterable[str]
        Top-level folders to walk.
    """
    return {module_name(path, root): path for folder in folders for path in sorted((root / folder).rglob("*.py"))}


def imported_names(source: str, module: str, is_package: bool) -> set[str]:
    """Every module name that ``source`` imports, as written (relative imports resolved).

    For ``from A import B`` both ``A`` and ``A.B`` are given: ``B`` may be a submodule or a name
    defined in ``A``; :func:`import_graph` keeps the ones that are project modules.

    Parameters
    ----------
    source : str
        Python source text.
    module : str
        Its dotted module name (to resolve relative imports).
    is_package : bool
        Whether ``source`` is a package's ``__init__.py`` (relative imports start from the package itself).
    """
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(files: Mapping[str, Path]) -> ImportGraph:
    """The project's import graph: each module to the project modules it imports.

    Parameters
    ----------
    files : Mapping[str, Path]
        Module name to source file, from :func:`project_files`.
    """
    graph: ImportGraph = {}
    for module, path in files.items():
        names = imported_names(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
        graph[module] = {name for name in names if name in files and name != module}
    return graph


def layer_of(module: str) -> str | None:
    """The layer of ``module`` by its longest matching prefix in :data:`LAYER_OF_PREFIX`, or None.

    Parameters
    ----------
    module : str
        A dotted module name.
    """
    if module in LAYER_OF_PACKAGE_ROOT:
        return LAYER_OF_PACKAGE_ROOT[module]
    matches = [prefix for prefix in LAYER_OF_PREFIX if module == prefix or module.startswith(prefix + ".")]
    return LAYER_OF_PREFIX[max(matches, key=len)] if matches else None


def find_cycles(graph: ImportGraph) -> list[list[str]]:
    """One cycle per strongly connected component of ``graph`` that has one, as a closed path.

    Each cycle is listed as ``[a, b, ..., a]`` (Tarjan's algorithm, then a path inside the component).

    Parameters
    ----------
    graph : ImportGraph
        Module to the modules it imports.
    """
    index_of: dict[str, int] = {}
    low_link: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(module: str) -> None:
        index_of[module] = low_link[module] = len(index_of)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.get(module, ())):
            if imported not in index_of:
                connect(imported)
                low_link[module] = min(low_link[module], low_link[imported])
            elif imported in on_stack:
                low_link[module] = min(low_link[module], index_of[imported])
        if low_link[module] == index_of[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            components.append(component)

    for module in sorted(graph):
        if module not in index_of:
            connect(module)
    return [
        cycle_within(component, graph)
        for component in components
        if len(component) > 1 or next(iter(component)) in graph.get(next(iter(component)), ())
    ]


def cycle_within(component: set[str], graph: ImportGraph) -> list[str]:
    """A closed import path through the first module (by name) of a strongly connected ``component``.

    Parameters
    ----------
    component : set[str]
        Modules that all reach each other.
    graph : ImportGraph
        Module to the modules it imports.
    """
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        reached = []
        for module in frontier:
            for imported in sorted(graph.get(module, set()) & component):
                if imported == start:
                    return [*paths[module], start]
                if imported not in paths:
                    paths[imported] = [*paths[module], imported]
                    reached.append(imported)
        frontier = reached
    raise ValueError(f"{sorted(component)}: not a strongly connected component of the graph")


def upward_imports(graph: ImportGraph) -> list[UpwardImport]:
    """Every import of a higher layer, or of a sibling layer of the same rank.

    Parameters
    ----------
    graph : ImportGraph
        Module to the modules it imports; every module must have a layer (see :func:`layer_of`).
    """
    found = []
    for importer in sorted(graph):
        importer_layer = layer_of(importer)
        for imported in sorted(graph[importer]):
            imported_layer = layer_of(imported)
            if importer_layer is None or imported_layer is None:
                raise ValueError(f"{importer} -> {imported}: a module of no layer; allowed: {sorted(LAYER_OF_PREFIX)}")
            higher = LAYER_RANK[imported_layer] > LAYER_RANK[importer_layer]
            sibling = LAYER_RANK[imported_layer] == LAYER_RANK[importer_layer] and imported_layer != importer_layer
            if higher or sibling:
                found.append(UpwardImport(importer, imported, importer_layer, imported_layer))
    return found


@pytest.fixture(scope="module")
def project_graph() -> ImportGraph:
    """The import graph of the project's source tree."""
    return import_graph(project_files(ROOT, SOURCE_FOLDERS))


def test_the_walk_finds_every_layer(project_graph):
    layers = {layer_of(module) for module in project_graph}
    assert set(LAYER_RANK) <= layers
    assert project_graph["fl_poison.cli"] >= {"fl_poison.launch"}


def test_every_module_has_a_layer(project_graph):
    without = sorted(module for module in project_graph if layer_of(module) is None)
    assert not without, f"modules of no layer (give them one in LAYER_OF_PREFIX): {without}"


def test_no_import_cycle(project_graph):
    cycles = find_cycles(project_graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_no_module_imports_a_higher_layer(project_graph):
    upward = upward_imports(project_graph)
    assert not upward, "imports against the layers:\n" + "\n".join(map(str, upward))


def test_imports_inside_functions_and_relative_imports_count():
    source = (
        "import clients.base\n"
        "from . import sibling\n"
        "from ..core.data import load\n"
        "def later():\n"
        "    from strategies import krum\n"
    )
    names = imported_names(source, "fl_poison.apps.server_app", is_package=False)
    assert {"clients.base", "fl_poison.apps.sibling", "fl_poison.core.data", "strategies.krum"} <= names


def test_checker_reports_a_cycle():
    graph = {
        "fl_poison.core.a": {"fl_poison.core.b"},
        "fl_poison.core.b": {"fl_poison.core.c"},
        "fl_poison.core.c": {"fl_poison.core.a"},
        "fl_poison.core.d": {"fl_poison.core.d"},
        "fl_poison.core.e": {"fl_poison.core.a"},
    }
    assert find_cycles(graph) == [
        ["fl_poison.core.a", "fl_poison.core.b", "fl_poison.core.c", "fl_poison.core.a"],
        ["fl_poison.core.d", "fl_poison.core.d"],
    ]


def test_checker_reports_upward_and_sibling_imports():
    graph = {
        "fl_poison.core.config": {"strategies.registry"},
        "clients.ada": {"strategies.krum", "fl_poison.core.config"},
        "strategies.registry": set(),
        "strategies.krum": set(),
        "fl_poison.apps.server_app": {"fl_poison.launch", "clients.ada"},
        "fl_poison.launch": {"fl_poison.apps.server_app"},
        "experiments.sweep": {"fl_poison.cli", "fl_poison.launch"},
        "fl_poison.cli": {"experiments.sweep"},
    }
    assert [(found.importer, found.imported) for found in upward_imports(graph)] == [
        ("clients.ada", "strategies.krum"),
        ("experiments.sweep", "fl_poison.cli"),
        ("fl_poison.apps.server_app", "fl_poison.launch"),
        ("fl_poison.core.config", "strategies.registry"),
    ]


def test_checker_finds_no_fault_in_a_clean_graph():
    graph = {
        "fl_poison.cli": {"fl_poison.launch", "experiments.sweep", "fl_poison.deploy.commands"},
        "experiments.sweep": {"fl_poison.launch"},
        "fl_poison.deploy.commands": {"fl_poison.core.config"},
        "fl_poison.launch": {"fl_poison.apps.attack_metrics", "fl_poison.core.config"},
        "fl_poison.apps.attack_metrics": {"clients.triggers", "strategies.registry"},
        "clients.triggers": {"fl_poison.core.config"},
        "strategies.registry": {"fl_poison.core.config"},
        "fl_poison.core.config": set(),
    }
    assert find_cycles(graph) == []
    assert upward_imports(graph) == []
