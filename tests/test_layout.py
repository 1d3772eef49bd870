"""The package layout's rules, checked on the source: imports only go down, no circles.

Every ``import`` counts, also those inside functions (a lazy import is still a dependency).
There is no exception (``ALLOWED`` is empty): a config reaches the simulator through the device
registry (``afrd.devices`` entry points), never through an import in ``afrd.acquire``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "afrd"

# Higher may import lower or equal-rank siblings' own modules; never upward, never across
# equal ranks (two stages of one rank do not know each other).
RANK = {
    "afrd": 0,  # errors, version
    "afrd.data": 1,
    "afrd.acquire": 2,
    "afrd.model": 2,
    "afrd.runtime": 3,
    "afrd.config": 4,
    "afrd.export": 5,
    "afrd.calibration": 5,
    "afrd.daemon": 6,
    "afrd.sim": 7,
    "afrd.web": 7,
    "afrd.cli": 8,
    "afrd.__main__": 9,
}
# (importer, imported) pairs allowed against the ranks, each with its reason: none.
ALLOWED: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The afrd modules ``name`` imports, resolved to modules that exist."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t.startswith("afrd") and t != name and t in MODULES:
                found.add(t)
    # `from afrd.x import y` also lists the package afrd.x: drop parents of a listed child
    return {m for m in found if not any(o.startswith(m + ".") for o in found)} | (found & {"afrd"})


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _stage(module: str) -> str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in RANK:
            return key
    return "afrd"


def test_every_package_has_a_rank():
    packages = {".".join(p.relative_to(PKG.parent).parts[:2]) for p in PKG.glob("*/__init__.py")}
    assert packages <= set(RANK), f"packages without a rank in RANK: {packages - set(RANK)}"


def test_imports_only_go_down():
    bad = []
    for src, targets in GRAPH.items():
        for dst in targets:
            s, d = _stage(src), _stage(dst)
            if s == d or (src, dst) in ALLOWED:
                continue
            if d != "afrd" and RANK[d] >= RANK[s]:
                bad.append(f"{src} -> {dst} ({s} rank {RANK[s]} -> {d} rank {RANK[d]})")
    assert not bad, "imports that do not go down:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt == "afrd" or nxt == node:
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


# Edges a config chooses: the PyTorch engine (engine.kind = "pytorch").
CHOSEN_BY_CONFIG = {"afrd.runtime.engines.pytorch"}


@pytest.mark.parametrize("module", ["afrd.daemon.service", "afrd.runtime.engines.onnxruntime"])
def test_production_modules_do_not_reach_the_simulator_or_torch(module):
    """Everything ``module`` can import, lazily too, unless a config asks for it: no afrd.sim,
    no afrd.model (torch)."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen or m in CHOSEN_BY_CONFIG:
            continue
        seen.add(m)
        todo += [t for t in GRAPH.get(m, ()) if (m, t) not in ALLOWED]
    reached = sorted(m for m in seen if m.startswith(("afrd.sim", "afrd.model")))
    assert not reached, f"{module} reaches {reached}"


def test_nothing_below_the_simulator_names_it():
    """Not even in a string (a module path handed to importlib is a dependency too): a config
    reaches the simulated devices through the registry, where afrd.sim registers them."""
    naming = sorted(
        name
        for name, path in MODULES.items()
        if RANK[_stage(name)] < RANK["afrd.sim"]
        and any(s in path.read_text() for s in ("afrd.sim", "afrd/sim"))
    )
    assert not naming, f"modules below afrd.sim that name it: {naming}"


def test_no_private_name_crosses_a_stage():
    """A leading underscore keeps a name inside its stage; another stage needing it means it
    is public (rename it) or lives in the wrong place."""
    leaks = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module.startswith("afrd") and _stage(node.module) != _stage(name):
                names = [a.name for a in node.names]
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                leaks += [f"{name}: from {node.module} import {p}" for p in private]
    assert not leaks, "private names imported across stages:\n" + "\n".join(sorted(leaks))


def test_config_reads_and_opens_no_engine():
    """Nothing ``afrd.config`` imports, lazily too, opens an engine: it reads the registry and
    the engines' option models; the loader and the engines' own modules are the runtime's,
    called from the daemon (`afrd config check` included)."""
    engines = {
        m
        for m in MODULES
        if m.startswith("afrd.runtime.engines.") and not m.endswith(("options", ".base"))
    }
    assert {"afrd.runtime.engines.onnxruntime", "afrd.runtime.engines.null"} <= engines
    seen, todo = set(), [m for m in MODULES if _stage(m) == "afrd.config"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += [t for t in GRAPH.get(m, ()) if (m, t) not in ALLOWED]
    opens = sorted(seen & (engines | {"afrd.runtime.loader"}))
    assert not opens, f"afrd.config reaches {opens}"


def _kind_packages() -> set[str]:
    """Each model kind's package, from the registry (afrd.model.kinds imports no kind)."""
    from afrd.model.kinds import KINDS

    return {ref for ref in KINDS.values() if isinstance(ref, str) and ref.startswith("afrd.")}


def _kind_of(module: str, packages: set[str]) -> str | None:
    return next((p for p in packages if module == p or module.startswith(p + ".")), None)


def test_model_kinds_never_import_each_other_and_only_the_registry_names_them():
    """A kind's modules import the shared level, never another kind; the shared level, export,
    the runtime and the demo reach a kind only through afrd.model.kinds (a name, no import)."""
    packages = _kind_packages()
    assert {"afrd.model.afrd", "afrd.model.memory"} <= packages <= set(MODULES)
    bad = [
        f"{src} -> {dst}"
        for src, targets in GRAPH.items()
        for dst in targets
        if _kind_of(dst, packages) not in (None, _kind_of(src, packages))
    ]
    assert not bad, "imports of a model kind from outside it:\n" + "\n".join(sorted(bad))


# the per-part path: what a part goes through, fed to the interfaces by the service
PART_PATH = ("afrd.daemon.pipeline", "afrd.daemon.verdict", "afrd.daemon.recorder")


def test_interfaces_import_the_part_path_never_the_reverse():
    """ZeroMQ, OPC UA, Modbus, metrics (and whatever link comes next) are peers in
    afrd.daemon.interfaces; the per-part path hands results to none of them by name."""
    assert {m for m in MODULES if m.startswith("afrd.daemon.interfaces.")} >= {
        f"afrd.daemon.interfaces.{n}"
        for n in ("base", "publisher", "control", "opcua", "modbus", "metrics")
    }
    bad = sorted(
        f"{src} -> {dst}"
        for src, targets in GRAPH.items()
        if src in PART_PATH or src.startswith(tuple(f"{m}." for m in PART_PATH))
        for dst in targets
        if dst == "afrd.daemon.interfaces" or dst.startswith("afrd.daemon.interfaces.")
    )
    assert not bad, "the per-part path imports an interface:\n" + "\n".join(bad)


def test_no_module_over_400_lines():
    long = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text().splitlines())) > 400 and name not in LONG_OK
    }
    assert not long, f"modules over 400 lines (split them, or say why in LONG_OK): {long}"


# module -> why it may stay long
LONG_OK: dict[str, str] = {}
