"""`modelpack doctor` against real registries (plain, TLS, basic auth), shell completion,
and help with examples on every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest
from support.helpers import run_cli

from modelpack.schemas import CLI_DOCTOR, validate
from modelpack.testing import RegistryServer
from modelpack_cli.main import cli


def _doctor(*args, env=None):
    result = run_cli("doctor", *args, "--json", env=env)
    document = json.loads(result.stdout)
    validate(document, CLI_DOCTOR, "doctor output")
    return result.returncode, {c["name"]: c for c in document["checks"]}


def test_doctor_on_a_healthy_setup_and_plain_registry(registry):
    code, checks = _doctor(registry.host, "--plain-http")
    assert code == 0, checks
    assert {"home", "store", "node cache", "config", "credentials", "registry", "auth"} <= set(
        checks
    )
    assert checks["registry"]["detail"].endswith("(plain HTTP)")
    assert checks["auth"]["detail"] == "no authentication required"
    assert checks["credentials"]["detail"].endswith("none (anonymous)")


def test_doctor_names_the_fix_for_an_untrusted_certificate(tmp_path):
    with RegistryServer(tls=True) as server:
        code, checks = _doctor(server.host)
        assert code == 1
        assert checks["registry"]["status"] == "fail"
        assert "--ca-file" in checks["registry"]["fix"]
        code, checks = _doctor(server.host, "--ca-file", str(server.ca_file))
        assert code == 0, checks
        assert checks["registry"]["detail"].endswith("(TLS verified)")


def test_doctor_checks_credentials_without_printing_them(tmp_path):
    with RegistryServer(users={"ci": "ci-secret"}) as server:
        code, checks = _doctor(server.host, "--plain-http")
        assert code == 1 and checks["auth"]["status"] == "fail"
        assert "modelpack login" in checks["auth"]["fix"]
        env = {"MODELPACK_USERNAME": "ci", "MODELPACK_PASSWORD": "wrong"}
        code, checks = _doctor(server.host, "--plain-http", env=env)
        assert code == 1 and "refused" in checks["auth"]["detail"]
        env["MODELPACK_PASSWORD"] = "ci-secret"
        result = run_cli("doctor", server.host, "--plain-http", env=env)
        assert result.returncode == 0, result.stdout
        assert "accepted as ci" in result.stdout and "MODELPACK_USERNAME" in result.stdout
        assert "ci-secret" not in result.stdout + result.stderr


def test_doctor_reports_an_unwritable_home_and_a_broken_config(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[registries\n")
    (tmp_path / "file").write_text("not a directory")
    env = {"MODELPACK_CONFIG": str(config), "MODELPACK_HOME": str(tmp_path / "file" / "home")}
    code, checks = _doctor(env=env)
    assert code == 1
    assert checks["config"]["status"] == "fail" and "not valid TOML" in checks["config"]["detail"]
    assert checks["home"]["status"] == "fail" and "MODELPACK_HOME" in checks["home"]["fix"]


def test_doctor_an_unreachable_registry_fails_fast_with_a_hint():
    code, checks = _doctor("127.0.0.1:9", "--plain-http")
    assert code == 1
    assert checks["registry"]["status"] == "fail" and checks["registry"]["fix"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_and_completions(shell):
    script = run_cli("completion", shell)
    assert script.returncode == 0
    assert "_MODELPACK_COMPLETE" in script.stdout
    words = {"bash": "bash_complete", "zsh": "zsh_complete", "fish": "fish_complete"}[shell]
    env = {
        **os.environ,
        "_MODELPACK_COMPLETE": words,
        "COMP_WORDS": "modelpack pu",
        "COMP_CWORD": "pu" if shell == "fish" else "1",  # fish passes the word itself
    }
    completed = subprocess.run(
        [sys.executable, "-m", "modelpack"], capture_output=True, text=True, env=env, timeout=60
    )
    assert "pull" in completed.stdout and "push" in completed.stdout


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in _all_commands(cli)], ids=" ".join)
def test_every_command_has_help_with_examples(path):
    result = run_cli(*path, "--help")
    assert result.returncode == 0
    assert "Examples:" in result.stdout
    example_lines = result.stdout.split("Examples:", 1)[1].strip().splitlines()
    assert example_lines and all("modelpack" in line or "$" in line for line in example_lines[:1])


@pytest.mark.parametrize("path", [p for p, _ in _all_commands(cli)], ids=" ".join)
def test_command_summaries_are_whole_sentences(path):
    """Issue 22 item 9: summaries were cut mid-phrase, in `--help` (click's limit) and in the
    CLI reference (mkdocs-click takes the docstring's first line)."""
    command = cli
    for name in path:
        command = command.commands[name]
    summary = command.get_short_help_str(limit=45)
    assert not summary.endswith("..."), summary
    line = command.short_help or (command.help or "").splitlines()[0]
    assert line == summary and line.endswith("."), line
    listed = run_cli(*path[:-1], "--help").stdout
    assert f"{path[-1]}  " in listed and summary in " ".join(listed.split()), listed


def _on_a_terminal(args, env):
    """Run the CLI with stdout on a pseudo-terminal, as a person at a shell would."""
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "modelpack", *args],
        stdout=follower, stderr=subprocess.DEVNULL, env={**os.environ, **env},
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=60)
    os.close(leader)
    return b"".join(chunks).decode("utf-8", "replace")


def test_no_color_is_honoured_on_a_terminal():
    coloured = _on_a_terminal(["doctor"], {"TERM": "xterm-256color"})
    plain = _on_a_terminal(["doctor"], {"TERM": "xterm-256color", "NO_COLOR": "1"})
    assert "\x1b[32m" in coloured  # green "ok" when colour is allowed
    assert "ok" in plain and "home" in plain
    assert not any(f"\x1b[{code}m" in plain for code in (31, 32, 33))


def _fake_harbor(version: str):
    """/v2/ as a registry answers it, and Harbor's /api/v2.0/systeminfo."""
    from support.serving import QuietHandler, serve

    class Handler(QuietHandler):
        def do_GET(self):  # noqa: N802
            if self.path == "/api/v2.0/systeminfo":
                body = json.dumps({"harbor_version": version, "auth_mode": "db_auth"}).encode()
                self.answer(200, body, {"Content-Type": "application/json"})
            else:
                self.answer(200, b"{}", {"Content-Type": "application/json"})

    return serve(Handler)


@pytest.mark.parametrize(
    ("version", "configured", "status", "wants"),
    [
        ("v2.13.1-5f3d2a1c", None, "warn", "cnai"),
        ("v2.15.0-1d2e3f4a", "cnai", "ok", "cnai"),
        ("v2.16.0-a1b2c3d4", None, "ok", "cncf"),
    ],
)
def test_doctor_recognises_a_harbor_and_the_media_types_it_renders(
    version, configured, status, wants, tmp_path
):
    from support.serving import shutdown

    server = _fake_harbor(version)
    host = f"127.0.0.1:{server.server_address[1]}"
    config = tmp_path / "registries.toml"
    config.write_text(
        f'[registries."{host}"]\n' + (f'media_types = "{configured}"\n' if configured else "")
    )
    try:
        code, checks = _doctor(host, "--plain-http", env={"MODELPACK_CONFIG": str(config)})
    finally:
        shutdown(server)
    assert code == 0, checks
    assert checks["harbor"]["status"] == status
    assert f"Harbor {version} renders models written with {wants}" in checks["harbor"]["detail"]
    if status == "warn":
        assert f'media_types = "{wants}"' in checks["harbor"]["fix"]


def test_doctor_says_nothing_of_harbor_for_another_registry(registry):
    _, checks = _doctor(registry.host, "--plain-http")
    assert "harbor" not in checks
