"""Imports point one way: cli | tools > zoo > callbacks | interop > models > pipelines | metrics >
synthego > data > errors | hub | batch, with no cycles, no helper imported from a DataModule
module, and no Lightning in the pure torch / diffusers layers. Lazy imports inside functions count.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "lego"

#: Rank of each top-level part of the package: a module imports only lower ranks (or its own part).
RANK = {
    "errors": 0, "hub": 0, "batch": 0,
    "data": 1,
    "synthego": 2,
    "metrics": 3, "pipelines": 3,
    "models": 4,
    "callbacks": 5, "interop": 5,
    "zoo": 6,
    "tools": 7,
    "cli": 8, "__main__": 9, "lego": 9,
}
#: Modules that define a LightningDataModule: only the data layer, the CLI and tools import them.
DATAMODULE_MODULES = {"lego.data.egogen", "lego.data.ego4d", "lego.data.epic_kitchens",
                      "lego.data.synthego"}
#: Pure torch / diffusers / transformers layers (house style: the network apart from the wrapper).
LIGHTNING_FREE = ("lego.pipelines", "lego.data.io", "lego.data.records", "lego.data.narration",
                  "lego.models.editing.components", "lego.models.editing.conditioning",
                  "lego.models.editing.guidance", "lego.models.editing.autoencoder",
                  "lego.models.instruct.network", "lego.batch", "lego.errors", "lego.hub")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every absolute module name the file imports, at any depth (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def part(name: str) -> str:
    pieces = name.split(".")
    return pieces[1] if len(pieces) > 1 else "lego"


GRAPH = {module_name(p): imports(p) for p in sorted(ROOT.rglob("*.py"))}


def test_every_part_has_a_rank():
    assert {part(m) for m in GRAPH} <= set(RANK)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module):
    own = part(module)
    wrong = sorted(
        name for name in GRAPH[module]
        if name.startswith("lego.") and part(name) != own and RANK[part(name)] >= RANK[own]
    )
    assert not wrong, f"{module} ({own}) imports {wrong}: not below it"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_datamodule_modules_are_not_imported_for_helpers(module):
    if part(module) in ("data", "cli", "tools", "__main__", "lego"):
        return
    used = sorted(n for n in GRAPH[module] if n in DATAMODULE_MODULES)
    assert not used, f"{module} imports DataModule module(s) {used}; use lego.data.io / records"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith(LIGHTNING_FREE)))
def test_pure_layers_do_not_import_lightning(module):
    used = sorted(n for n in GRAPH[module] if n.split(".")[0] in ("lightning", "pytorch_lightning"))
    assert not used, f"{module} imports {used}"


def test_no_cycles_between_modules():
    known = set(GRAPH)
    edges = {m: {n for n in names if n in known and n != m} for m, names in GRAPH.items()}
    for m in edges:  # a package's __init__ re-exports: count its children as imported through it
        edges[m] = {n for n in edges[m] if not m.startswith(n + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
