"""What a new user meets first: the banner `serve` prints, `/login` without a token, and
the README's setup steps (the SSH host example, the systemd unit shipped beside it)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from asyncci.config import load_config
from asyncci.server import banner
from asyncci.web.pages import TEMPLATES
from tests.support.config import make_config
from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
UNIT = ROOT / "contrib" / "asyncci.service"


def test_the_banner_names_the_dashboard_repos_hosts_and_whether_writes_work(
    tmp_path: Path
) -> None:
    path = make_config(
        tmp_path, [{"name": "app", "url": str(tmp_path), "script": "true"}], port=8181,
        hosts=[{"name": "b1", "address": "b1.example.org", "user": "ci", "port": 2222,
                "slots": 4},
               {"name": "here", "type": "local", "slots": 1}],
        server={"public_url": "https://ci.example.org"}, web={"public": False})
    lines = banner(load_config(path, environ={})).splitlines()
    assert lines == [
        "asyncci dashboard at https://ci.example.org/ (login to read), listening on"
        " 127.0.0.1:8181",
        "  repos: app",
        "  hosts: b1 (ci@b1.example.org:2222, 4 slots), here (local, 1 slot)",
        "  writes: DISABLED: no token is set (the variable web.token_env names, ASYNCCI_TOKEN"
        " by default): nobody can log in, trigger or cancel",
    ]
    token = {"ASYNCCI_TEST_TOKEN": "a-token-long-enough"}
    assert "  writes: enabled" in banner(load_config(path, environ=token))


def test_serve_prints_the_banner_once(config_for: Callable[..., Path]) -> None:
    server = ServerProcess(config_for()).start()
    try:
        log = server.log.read_text()
    finally:
        server.kill()
    assert log.count(f"asyncci dashboard at {server.url}/ (public)") == 1
    assert "  hosts: local (local, 2 slots)\n  writes: enabled" in log


@pytest.mark.parametrize("no_token", [True, False])
def test_login_says_so_when_no_token_is_configured(no_token: bool) -> None:
    html = TEMPLATES.get_template("login.html").render(
        repos=[], logged_in=False, csrf="", path="/login", error=None, next="/",
        no_token=no_token)
    assert ("has no token configured" in html) is no_token
    assert ('<form method="post" action="/login"' in html) is not no_token


def test_readme_starts_with_the_two_commands_and_points_to_the_dashboard() -> None:
    assert README.startswith(
        "# asyncci\n\n```sh\n"
        "bash .ci/setup && .venv/bin/asyncci serve -c config.example.toml      # set up and serve\n"
        "bash .ci/setup --test && .venv/bin/python -m pytest                   # set up and test\n"
        "```\n")
    intro = README.split("\n## ", 1)[0]
    assert "<http://127.0.0.1:8080/>" in intro and "/api/builds" not in intro
    first_run = README.split("## First run", 1)[1].split("\n## ", 1)[0]
    assert first_run.index("export ASYNCCI_TOKEN=") < first_run.index("asyncci serve")


def test_the_readme_ssh_host_example_is_a_valid_config(tmp_path: Path) -> None:
    section = README.split("## Your own repos and an SSH build host", 1)[1].split("\n## ", 1)[0]
    assert "ssh-keyscan -p 2222 builder1.example.org >> ~/.ssh/known_hosts" in section
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "asyncci.toml").write_text(example)
    (host,) = load_config(tmp_path / "asyncci.toml", environ={}).hosts
    assert (host.address, host.port, host.user, host.local) == (
        "builder1.example.org", 2222, "ci", False)


def test_the_systemd_unit_is_the_one_the_readme_installs() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are CamelCase
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    binary, command, flag, config = service["ExecStart"].split()
    steps = README.split("## Running it as a service", 1)[1].split("\n## ", 1)[0]
    assert (command, flag) == ("serve", "-c")
    assert f"python3 -m venv {binary.removesuffix('/bin/asyncci')} " in steps
    assert f"cp asyncci.toml {Path(config).parent}/" in steps
    assert f"/dev/stdin {service['EnvironmentFile']}" in steps
    assert f"--home-dir /var/lib/{service['StateDirectory']} " in steps
    assert "sudo cp contrib/asyncci.service /etc/systemd/system/" in steps
    assert "sudo systemctl daemon-reload" in steps and "enable --now asyncci" in steps
    # Jobs on a local host live in the service's cgroup: stopping it must not kill them.
    assert service["KillMode"] == "process"
    assert service["RestartPreventExitStatus"] == "2"  # a bad config: restarting can't help


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit() -> None:
    verify = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True,
                            text=True, timeout=60)
    # The one thing it may miss here is the installed asyncci itself.
    problems = [line for line in verify.stderr.splitlines()
                if line and not re.search(r"/opt/asyncci/bin/asyncci is not executable", line)]
    assert problems == []
