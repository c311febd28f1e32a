"""`make_config(**overrides)`: a real config file in a tmp dir, written as TOML."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def to_toml(data: dict[str, Any]) -> str:
    lines: list[str] = []
    for section, body in data.items():
        tables = body if isinstance(body, list) else [body]
        for table in tables:
            lines.append(f"[[{section}]]" if isinstance(body, list) else f"[{section}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
            lines.append("")
    return "\n".join(lines)


def make_config(
    tmp: Path,
    repos: list[dict[str, Any]],
    hosts: list[dict[str, Any]] | None = None,
    port: int | None = None,
    **sections: dict[str, Any],
) -> Path:
    port = port or free_port()
    data: dict[str, Any] = {
        "server": {"listen": f"127.0.0.1:{port}", "data_dir": str(tmp / "data"),
                   **sections.pop("server", {})},
        "web": {"token_env": "ASYNCCI_TEST_TOKEN", **sections.pop("web", {})},
        **sections,
    }
    if hosts is not None:
        data["hosts"] = hosts
    data["repos"] = [{"poll": "0", "retries": 2, **r} for r in repos]
    path = tmp / "asyncci.toml"
    path.write_text(to_toml(data))
    return path
