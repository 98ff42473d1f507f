"""examples/ci/*.yml run as their CI systems would run them, against a real registry with
basic auth: the scripts are taken from the YAML, expressions and variables filled in the
way GitHub Actions and GitLab CI do, and executed with bash. Only the `pip install` step is
skipped (modelpack is installed from this checkout)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.helpers import run_cli, tree_files
from support.model_hubs import FakeHub, HubRepo

import modelpack
from modelpack.schemas import CLI_BUILD, validate
from modelpack.testing import RegistryServer, make_tiny_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ci"
USER, PASSWORD, KEY_PASSWORD = "ci-robot", "ci-robot-pass", "key-pass"


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ci-registry") / "server"
    with RegistryServer(users={USER: PASSWORD}, workdir=workdir) as server:
        yield server


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = FakeHub().start()
    server.add(HubRepo("org/tiny", make_tiny_model(tmp_path_factory.mktemp("hub") / "t"), "c" * 40))
    yield server
    server.stop()


@pytest.fixture
def checkout(tmp_path):
    """The repository a pipeline checks out: a model directory and the public key."""
    repo = tmp_path / "repo"
    make_tiny_model(repo / "model")
    keys = run_cli(
        "keygen", "--out", str(repo / "ci"), env={"MODELPACK_KEY_PASSWORD": KEY_PASSWORD}
    )
    assert keys.returncode == 0, keys.stderr
    return repo


def _shell_env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPACK_USER")}
    env["PATH"] = (
        f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # this checkout's modelpack
    )
    env["MODELPACK_HOME"] = str(tmp_path / "runner-home")
    return {**env, **extra}


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"{script}\n--- stderr:\n{result.stderr}"
    return result


# -- GitHub Actions ------------------------------------------------------------------

EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")


def _evaluate(expression: str, context: dict) -> str:
    """The subset of the Actions expression language the example uses: a.b.c and `x || 'y'`."""
    for alternative in expression.split("||"):
        alternative = alternative.strip()
        if alternative.startswith("'"):
            return alternative.strip("'")
        value = context
        for part in alternative.split("."):
            value = value.get(part, {}) if isinstance(value, dict) else {}
        if value:
            return str(value)
    return ""


def _fill(text: str, context: dict) -> str:
    return EXPRESSION.sub(lambda m: _evaluate(m.group(1), context), text)


@pytest.mark.parametrize("source", ["directory", "hf"])
def test_github_actions_workflow_publishes_and_signs(
    auth_registry, checkout, tmp_path, hub, source
):
    workflow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    ref_base = f"{auth_registry.host}/ci/bert-{source}"
    context = {
        "github": {"ref_name": "model-v1"},
        "inputs": {"source": "./model" if source == "directory" else "hf://org/tiny"},
        "vars": {"MODEL_REF": ref_base},
        "secrets": {
            "REGISTRY_USERNAME": USER,
            "REGISTRY_PASSWORD": PASSWORD,
            "SIGNING_KEY": (checkout / "ci.key").read_text(),
            "SIGNING_KEY_PASSWORD": KEY_PASSWORD,
        },
        "steps": {},
    }
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    summary = tmp_path / "summary.md"
    base = _shell_env(
        tmp_path,
        {"RUNNER_TEMP": str(runner_temp), "GITHUB_STEP_SUMMARY": str(summary),
         "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_DISABLE_XET": "1"},
    )  # fmt: skip
    base.update({k: _fill(str(v), context) for k, v in workflow["env"].items()})
    ran = []
    for step in workflow["jobs"]["publish"]["steps"]:
        if "run" not in step:
            continue
        if step["run"].startswith("pip install"):
            assert "modelpack-oci" in step["run"]  # the published distribution name
            continue
        output = tmp_path / f"output-{len(ran)}"
        output.touch()
        env = {**base, "GITHUB_OUTPUT": str(output)}
        env.update({k: _fill(str(v), context) for k, v in (step.get("env") or {}).items()})
        _bash(_fill(step["run"], context), checkout, env)
        if step.get("id"):
            lines = output.read_text().splitlines()
            context["steps"][step["id"]] = {"outputs": dict(line.split("=", 1) for line in lines)}
        ran.append(step["name"])
    assert ran == ["Build, push and sign", "Check the signature as a consumer would"]

    outputs = context["steps"]["publish"]["outputs"]
    result = json.loads((checkout / "result.json").read_text())
    validate(result, CLI_BUILD, "result.json")
    assert outputs["digest"] == result["digest"] and outputs["ref"] == f"{ref_base}:model-v1"
    assert result["signature"]["digest"] == result["digest"]
    assert f"`{ref_base}:model-v1@{result['digest']}`" in summary.read_text()
    assert not (runner_temp / "signing.key").exists()  # the key did not outlive its step
    # A consumer pulls it, requiring the signature.
    pulled = run_cli(
        "pull", f"{outputs['ref']}@{outputs['digest']}", "-o", str(tmp_path / "pulled"),
        "--verify-key", str(checkout / "ci.pub"),
        env={"MODELPACK_USERNAME": USER, "MODELPACK_PASSWORD": PASSWORD},
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    expected = checkout / "model" if source == "directory" else hub.repos["org/tiny"].root
    assert tree_files(tmp_path / "pulled") == tree_files(expected)


# -- GitLab CI -----------------------------------------------------------------------


def test_gitlab_ci_job_publishes_signs_and_reports_the_digest(
    auth_registry, checkout, tmp_path, monkeypatch
):
    job = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())["publish-model"]
    assert job["before_script"] == ["pip install 'modelpack-oci[hf]'"]
    predefined = {
        "CI_REGISTRY_IMAGE": f"{auth_registry.host}/group/project",
        "CI_COMMIT_TAG": "v1",
        "CI_REGISTRY_USER": USER,
        "CI_REGISTRY_PASSWORD": PASSWORD,
        "SIGNING_KEY": str(checkout / "ci.key"),  # a "File" variable: GitLab passes a path
        "SIGNING_KEY_PASSWORD": KEY_PASSWORD,
    }
    env = _shell_env(tmp_path, predefined)
    for name, value in job["variables"].items():  # GitLab expands variables in variables
        env[name] = re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""), str(value))
    result = _bash("\n".join(job["script"]), checkout, env)

    dotenv = dict(line.split("=", 1) for line in (checkout / "model.env").read_text().splitlines())
    build = json.loads((checkout / "result.json").read_text())
    ref = f"{auth_registry.host}/group/project/models/bert:v1"
    assert dotenv["MODEL_DIGEST"] == build["digest"] == build["signature"]["digest"]
    assert f"Published {ref}@{build['digest']}" in result.stdout
    monkeypatch.setenv("MODELPACK_USERNAME", USER)
    monkeypatch.setenv("MODELPACK_PASSWORD", PASSWORD)
    inspected = modelpack.inspect(
        ref, remote=True, settings=modelpack.Settings(home=tmp_path / "c")
    )
    assert inspected.descriptor.digest == build["digest"] and inspected.signatures >= 1
    assert sorted(job["artifacts"]["paths"]) == ["result.json"]


def test_ci_output_off_a_terminal_is_a_few_plain_lines(checkout, tmp_path):
    """What a CI log shows: status lines, no progress-bar redraws, no colour codes."""
    result = run_cli(
        "build", str(checkout / "model"), "-t", "127.0.0.1:1/ci/log:v1",
        env={"MODELPACK_HOME": str(tmp_path / "h"), "FORCE_COLOR": "", "NO_COLOR": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert 1 <= len(lines) <= 12, result.stderr
    assert "\x1b[" not in result.stderr + result.stdout and "\r" not in result.stderr
    assert lines[-1].startswith("Built 127.0.0.1:1/ci/log:v1 sha256:")
