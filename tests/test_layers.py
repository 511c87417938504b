"""The house drawn from roar's imports (every import, also the lazy ones
inside functions): dependencies point one way — the entry points (cli, roard,
the API) use query/requests/shared, which use record, which uses capture —
no module imports one that (directly or through others) imports it back, and
nothing below the entry points prints."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
from conftest import REPO

PKG = REPO / "roar"

# tier of each top-level part of roar/: an import may only point to the same or a lower tier
TIERS = {"capture": 0, "record": 1, "query": 2, "requests": 2, "shared": 2,
         "cli": 3, "daemon": 3, "api": 3, "__main__": 3, "__init__": 3}


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The roar modules (or names inside them) a file imports, absolute."""
    here = _module(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return {m for m in found if m == "roar" or m.startswith("roar.")}


def _graph() -> nx.DiGraph:
    files = {_module(p): p for p in PKG.rglob("*.py")}
    g = nx.DiGraph()
    g.add_nodes_from(files)
    for mod, path in files.items():
        for target in _imports(path):
            while target not in files:  # `from roar.x import name`: the module is roar.x
                target = target.rpartition(".")[0]
            if target != mod and target != "roar" and not mod.startswith(target + "."):
                g.add_edge(mod, target)
    return g


def _part(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_the_graph_is_read_from_the_sources():
    g = _graph()
    assert g.number_of_nodes() > 50 and g.number_of_edges() > 100
    assert g.has_edge("roar.record.recorder", "roar.record.store")
    assert set(map(_part, g.nodes)) <= set(TIERS), set(map(_part, g.nodes)) - set(TIERS)


def test_no_import_points_up():
    g = _graph()
    up = sorted(f"{a} -> {b}" for a, b in g.edges
                if TIERS[_part(a)] < TIERS[_part(b)])
    assert not up, "imports pointing up the layers:\n" + "\n".join(up)


def test_no_import_cycle():
    cycles = sorted(" -> ".join(c + [c[0]]) for c in nx.simple_cycles(_graph()))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_same_tier_parts_do_not_depend_on_each_other_both_ways():
    g = _graph()
    parts = nx.DiGraph((_part(a), _part(b)) for a, b in g.edges if _part(a) != _part(b))
    both = sorted(f"{a} <-> {b}" for a, b in parts.edges if a < b and parts.has_edge(b, a))
    assert not both, both


def test_nothing_below_the_entry_points_prints():
    """Domain code returns values and messages; the CLI and roard write them.
    (roar/record/timing.py is the ROAR_TIMING=1 diagnostic, written to stderr
    by design.)"""
    allowed = {"roar.record.timing"}
    printing = []
    for path in PKG.rglob("*.py"):
        mod = _module(path)
        if TIERS[_part(mod)] == 3 or mod in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name in ("print", "click.echo", "click.secho") or \
                        name.endswith(("stdout.write", "stderr.write")):
                    printing.append(f"{mod}:{node.lineno} {name}")
    assert not printing, printing
