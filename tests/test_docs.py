"""The docs don't drift from the code: every config key (the loader's own table of them)
is shown in config.example.toml and the README, every SPEC route is served, and
ARCHITECTURE.md names every module."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from asyncci.config import KEYS, load_config

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT.parent / "shared" / "SPEC.md"

ROUTES = [
    ("GET", "/api/builds"), ("GET", "/api/builds/{id}"), ("GET", "/api/jobs/{id}/log"),
    ("GET", "/api/jobs/{id}/log/stream"), ("POST", "/api/repos/{repo}/builds"),
    ("POST", "/api/builds/{id}/cancel"), ("POST", "/api/builds/{id}/rebuild"),
    ("POST", "/api/builds/{id}/approve"),
    ("GET", "/api/queue"), ("GET", "/api/hosts"), ("POST", "/api/hosts/{name}/drain"),
    ("POST", "/api/hosts/{name}/resume"), ("POST", "/hooks/poke/{repo}"), ("GET", "/healthz"),
    ("POST", "/hooks/github"),
]


def toml_keys(text: str) -> set[tuple[str, str]]:
    """(section, key) of each `key = ` line of a TOML example, commented out or not."""
    section, found = "", set()
    for line in text.splitlines():
        if m := re.match(r"^#? ?\[\[?(\w+)\]\]?", line):
            section = m[1]
        elif m := re.match(r"^#? ?(\w+) = ", line):
            found.add((section, m[1]))
    return found


def readme_keys(text: str) -> set[tuple[str, str]]:
    """(section, key) of each key in the first cell of the README's reference rows: `a.b`,
    `a[].b`, or a bare `c` after either in the same cell (`hosts[].address`, `port`)."""
    found = set()
    for line in text.splitlines():
        section = ""
        for name in re.findall(r"`([^`]+)`", line.split("|")[1] if line.startswith("| `") else ""):
            if m := re.fullmatch(r"(\w+)(?:\[\])?\.(\w+)", name):
                section, name = m[1], m[2]
            if section and re.fullmatch(r"\w+", name):
                found.add((section, name))
    return found


@pytest.mark.parametrize("section", KEYS)
def test_every_key_is_in_the_example_and_the_readme(section: str) -> None:
    example = toml_keys((ROOT / "config.example.toml").read_text())
    readme = readme_keys((ROOT / "README.md").read_text())
    for key in KEYS[section]:
        assert (section, key) in example, f"{section}.{key} not in config.example.toml"
        assert (section, key) in readme, f"{section}.{key} not in the README's reference"


def test_spec_keys_are_all_known() -> None:
    if not SPEC.exists():
        pytest.skip("SPEC.md is not beside this clone")
    block = SPEC.read_text().split("```toml", 1)[1].split("```", 1)[0]
    assert toml_keys(block) <= {(s, k) for s, keys in KEYS.items() for k in keys}


def test_the_example_loads_as_shipped() -> None:
    config = load_config(ROOT / "config.example.toml", environ={})
    assert [h.name for h in config.hosts] == ["local"] and config.hosts[0].local
    assert config.repos[0].url == str(ROOT)  # this very checkout
    assert "python3 -m compileall" in config.repos[0].script


def test_every_spec_route_is_served() -> None:
    from asyncci.web import api, hooks, pages, streams

    served = {(r.method, re.sub(r"\{(\w+):[^}]+\}", r"{\1}", r.path))  # {path:.+} → {path}
              for m in (api, hooks, pages, streams)
              for r in m.routes}
    assert set(ROUTES) <= served
    if SPEC.exists():
        spec_routes = set(re.findall(r"`(GET|POST) (/(?:api|hooks|healthz)[^` ?]*)", SPEC.read_text()))
        assert spec_routes <= served


def test_the_docs_name_no_key_the_loader_refuses() -> None:
    known = {(s, k) for s, keys in KEYS.items() for k in keys}
    assert toml_keys((ROOT / "config.example.toml").read_text()) <= known
    assert readme_keys((ROOT / "README.md").read_text()) <= known


def modules() -> list[str]:
    """Every module of the package as ARCHITECTURE.md names it: `store/edges.py`; a
    package's `__init__.py` by the package, `store/`; empty `__init__.py` files not at all."""
    package = ROOT / "asyncci"
    names = []
    for path in sorted(package.rglob("*.py")) + sorted(package.rglob("*.sh")):
        relative = path.relative_to(package)
        if path.name == "__init__.py":
            if path.stat().st_size and relative.parent != Path("."):
                names.append(f"{relative.parent}/")
        else:
            names.append(str(relative))
    return names


@pytest.mark.parametrize("module", modules())
def test_architecture_md_names_every_module(module: str) -> None:
    assert re.search(rf"`{re.escape(module)}[:`]", (ROOT / "ARCHITECTURE.md").read_text()), (
        f"ARCHITECTURE.md does not name {module}")
