"""DESIGN.md's import table holds: each module imports only what the table allows it."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "asyncci"
DESIGN = ROOT.parent / "shared" / "DESIGN.md"

# The "may import" column of DESIGN.md's module table ("stdlib" = nothing of ours nor
# third-party; "everything" = no limit). Kept here so the test runs from a bare clone,
# and compared with DESIGN.md itself when it is beside the clone.
ALLOWED: dict[str, set[str]] = {
    "config": {"stdlib"},
    "model": {"stdlib"},
    "store": {"model", "config"},
    "mirror": {"config"},
    "pipeline": {"model", "config", "mirror"},
    "planner": {"model", "config", "store", "pipeline", "mirror"},
    "fairqueue": {"model", "config"},
    "triggers": {"config", "mirror", "planner"},
    "logs": {"config"},
    "hosts": {"model", "config", "logs"},
    "scheduler": {"model", "config", "store", "hosts", "logs", "fairqueue"},
    "reporters": {"model", "config", "store"},
    "web": {"store", "planner", "scheduler", "logs", "model", "config"},
    "server": {"everything"},
    "cli": {"server", "config"},
}
# Leaf modules: every module may import them, and they import nothing of ours but each
# other. They are not in DESIGN.md's table (ARCHITECTURE.md describes them).
LEAVES = {"refs"}
# Modules that must stay free of third-party libraries too.
THIRD_PARTY_FOR = {"config": set(), "model": set(), "fairqueue": set(), "logs": set(),
                   "refs": set()}


def component(module: str) -> str:
    """asyncci.hosts.ssh → hosts; asyncci.store → store."""
    return module.split(".")[1]


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(our components, top-level third-party/stdlib names) imported by a file."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name == "asyncci" or name.startswith("asyncci."):
                if name.count(".") >= 1:
                    ours.add(component(name))
            else:
                others.add(name.split(".")[0])
    return ours, others


def modules() -> list[Path]:
    """Every module, a component package's `__init__.py` too when it holds anything."""
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if p.name != "__init__.py" or p.parent != PACKAGE and p.stat().st_size)


def test_table_matches_design_md() -> None:
    if not DESIGN.exists():
        pytest.skip("DESIGN.md is not beside this clone")
    table = {}
    for name, allowed in re.findall(r"^\| `([a-z_/]+?)(?:\.py|/)?`[^|]*\|[^|]*\| ([^|]+) \|$",
                                    DESIGN.read_text(), re.M):
        key = name.split("/")[0]
        allowed = allowed.split(";")[0]  # web's "; never `mirror` or `hosts` directly"
        words = {w.strip().strip("`").removesuffix(".py") for w in allowed.split(",")}
        table[key] = words
    table["cli"] = {"server", "config", "web client code"}
    assert {k: v - {"web client code"} for k, v in table.items() if k in ALLOWED} == {
        k: v for k, v in ALLOWED.items() if k in table}


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_what_design_allows(path: Path) -> None:
    own = component(".".join(path.relative_to(ROOT).with_suffix("").parts))
    assert own in ALLOWED or own in LEAVES, f"{own} is not in DESIGN.md's table"
    allowed = ALLOWED.get(own, set())
    ours, others = imports_of(path)
    if "everything" not in allowed:
        forbidden = ours - allowed - LEAVES - {own}
        assert not forbidden, f"{path.name} imports {sorted(forbidden)}; allowed: {sorted(allowed)}"
    if own in THIRD_PARTY_FOR:
        third = {m for m in others if m not in sys.stdlib_module_names and m != "__future__"}
        assert not third, f"{path.name} must use the stdlib only, imports {sorted(third)}"
