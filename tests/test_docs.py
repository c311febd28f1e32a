"""The docs don't drift from the code: every config key is shown in config.example.toml
and the README, and every SPEC route is served."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from asyncci.config import load_config

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT.parent / "shared" / "SPEC.md"

KEYS = {
    "server": ["listen", "public_url", "data_dir", "log_retention", "max_log_bytes",
               "max_artifact_bytes"],
    "web": ["public", "token_env"],
    "github": ["webhook_secret_env", "token_env", "app_id", "private_key_file", "api_url"],
    "hosts": ["name", "type", "address", "port", "user", "key_file", "known_hosts", "slots",
              "labels", "workdir", "slot_env", "prepare", "grace", "container_command",
              "container_options", "slot_devices", "untrusted"],
    "repos": ["name", "url", "branches", "pull_requests", "poll", "schedule", "github",
              "weight", "max_running", "retries", "labels", "timeout", "build_every_commit",
              "keep_superseded", "pipeline_file", "isolation", "image", "network",
              "fork_pull_requests", "env", "secrets", "script"],
}
ROUTES = [
    ("GET", "/api/builds"), ("GET", "/api/builds/{id}"), ("GET", "/api/jobs/{id}/log"),
    ("GET", "/api/jobs/{id}/log/stream"), ("POST", "/api/repos/{repo}/builds"),
    ("POST", "/api/builds/{id}/cancel"), ("POST", "/api/builds/{id}/rebuild"),
    ("POST", "/api/builds/{id}/approve"),
    ("GET", "/api/queue"), ("GET", "/api/hosts"), ("POST", "/api/hosts/{name}/drain"),
    ("POST", "/api/hosts/{name}/resume"), ("POST", "/hooks/poke/{repo}"), ("GET", "/healthz"),
    ("POST", "/hooks/github"),
]


@pytest.mark.parametrize("section", KEYS)
def test_every_key_is_in_the_example_and_the_readme(section: str) -> None:
    example = (ROOT / "config.example.toml").read_text()
    readme = (ROOT / "README.md").read_text()
    table = example.split(f"[{section}]", 1)[1]
    for key in KEYS[section]:
        assert re.search(rf"^#? ?{key} = ", table, re.M), f"{section}.{key} not in the example"
        assert f"`{section}.{key}`" in readme or f"`{section}[].{key}`" in readme or \
            re.search(rf"`{section}\[\]\.[^`]*`, `{key}`|`{key}`", readme), f"{key} not in README"


def test_spec_keys_are_all_known() -> None:
    if not SPEC.exists():
        pytest.skip("SPEC.md is not beside this clone")
    block = SPEC.read_text().split("```toml", 1)[1].split("```", 1)[0]
    section, found = "", set()
    for line in block.splitlines():
        if m := re.match(r"^#? ?\[\[?(\w+)\]\]?", line):
            section = m[1]
        elif m := re.match(r"^#? ?(\w+) = ", line):
            found.add((section, m[1]))
    assert found <= {(s, k) for s, keys in KEYS.items() for k in keys}


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
