"""The CLI contract: commands of the issue, exit codes, one-line errors, --json schemas."""

import json

import jsonschema
import pytest
from support.helpers import run_cli, tree_files

import modelpack
from modelpack.schemas import CLI_BUILD, CLI_INSPECT, CLI_LS, CLI_TAGS, CLI_TRANSFER, validate
from modelpack.testing.registry import free_port


def _ok(result):
    assert result.returncode == 0, result.stderr
    return result


def test_the_quick_start_works_by_hand(tiny_model, registry, tmp_path):
    ref = f"{registry.host}/team/bert:v1"
    built = json.loads(_ok(run_cli("build", str(tiny_model), "-t", ref, "--json")).stdout)
    validate(built, CLI_BUILD)
    pushed = json.loads(_ok(run_cli("push", ref, "--plain-http", "--json")).stdout)
    validate(pushed, CLI_TRANSFER)
    assert pushed["digest"] == built["digest"]
    out = tmp_path / "bert"
    pulled = _ok(run_cli("pull", ref, "-o", str(out), "--plain-http"))
    assert pulled.stdout.strip() == str(out)
    assert tree_files(out) == tree_files(tiny_model)
    inspected = json.loads(
        _ok(run_cli("inspect", ref, "--remote", "--json", "--plain-http")).stdout
    )
    validate(inspected, CLI_INSPECT)
    assert inspected["digest"] == built["digest"]
    assert inspected["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    # Loopback registries speak plain HTTP without the flag, as docker allows.
    assert (
        json.loads(_ok(run_cli("inspect", ref, "--remote", "--json")).stdout)["digest"]
        == built["digest"]
    )


def test_global_options_go_before_or_after_the_command(tiny_model, registry):
    ref = f"{registry.host}/team/order:v1"
    _ok(run_cli("build", str(tiny_model), "-t", ref, "-q"))
    _ok(run_cli("--plain-http", "push", ref))
    _ok(run_cli("push", ref, "--plain-http", "--concurrency", "2"))


def test_local_store_commands(tiny_model, tmp_path):
    ref = "127.0.0.1:5000/team/bert:v1"
    _ok(run_cli("build", str(tiny_model), "-t", ref, "-q"))
    _ok(run_cli("tag", ref, "127.0.0.1:5000/team/bert:stable"))
    listing = json.loads(_ok(run_cli("ls", "--json")).stdout)
    validate(listing, CLI_LS)
    assert [m["reference"] for m in listing["models"]] == sorted(
        [ref, "127.0.0.1:5000/team/bert:stable"]
    )
    human = _ok(run_cli("ls")).stdout
    assert "team/bert:stable" in human and "safetensors" in human
    _ok(run_cli("rm", ref, "127.0.0.1:5000/team/bert:stable"))
    assert json.loads(_ok(run_cli("ls", "--json")).stdout) == {"models": []}
    pruned = _ok(run_cli("prune"))
    assert "Removed" in pruned.stderr
    assert json.loads(_ok(run_cli("ls", "--json")).stdout) == {"models": []}


def _one_line_error(result, code):
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return lines[0]


def test_not_found_reference_exits_3(registry, tmp_path):
    line = _one_line_error(
        run_cli(
            "pull", f"{registry.host}/team/missing:v1", "-o", str(tmp_path / "x"), "--plain-http"
        ),
        3,
    )
    assert "team/missing:v1 not found" in line
    assert not (tmp_path / "x").exists()
    _one_line_error(run_cli("push", "127.0.0.1:5000/never/built:v1", "--plain-http"), 3)
    _one_line_error(run_cli("build", str(tmp_path / "no-such-dir"), "-t", "reg.io/a:b"), 3)


def test_unreachable_registry_exits_6(tmp_path):
    line = _one_line_error(
        run_cli(
            "pull",
            f"127.0.0.1:{free_port()}/team/bert:v1",
            "-o",
            str(tmp_path / "x"),
            "--plain-http",
        ),
        6,
    )
    assert "refused the connection: nothing listens there" in line
    assert not (tmp_path / "x").exists()


def test_a_host_that_does_not_resolve_is_one_line_naming_it(tmp_path):
    line = _one_line_error(
        run_cli("pull", "models.example.invalid/team/bert:v1", "-o", str(tmp_path / "x")), 6
    )
    assert "cannot resolve the registry host models.example.invalid" in line


def test_a_reference_without_a_host_says_docker_hub_was_assumed(tmp_path):
    from modelpack.registry.transport import unreachable

    error = unreachable(
        "registry-1.docker.io",
        OSError("NameResolutionError(... Failed to resolve 'registry-1.docker.io')"),
    )
    assert "the reference names no registry host, so Docker Hub was assumed" in error.message
    assert "127.0.0.1:5000/team/bert:v1" in error.hint


def test_build_warns_of_no_weights_and_of_an_assumed_docker_hub(tmp_path):
    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    result = run_cli("build", str(folder), "-t", "bert:v1", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    validate(document, CLI_BUILD, "build --json")
    assert any(w.startswith("no weight files") for w in document["warnings"])
    assert any("names no registry host" in w for w in document["warnings"])
    assert "Warning: no weight files" in result.stderr
    assert "docker.io/library/bert:v1 on Docker Hub" in result.stderr


def test_plain_http_from_the_environment(tiny_model, registry):
    ref = f"{registry.host}/team/env:v1"
    _ok(run_cli("build", str(tiny_model), "-t", ref, "-q"))
    pushed = _ok(run_cli("push", ref, "--json", env={"MODELPACK_PLAIN_HTTP": "1"}))
    assert json.loads(pushed.stdout)["transferred"] > 0


@pytest.mark.parametrize("bad", ["Bad Ref!", "127.0.0.1:5000/Team/bert:v1", "reg.io/a@sha256:12"])
def test_malformed_reference_exits_2(bad, tmp_path):
    line = _one_line_error(run_cli("pull", bad, "-o", str(tmp_path / "x")), 2)
    assert "invalid reference" in line


def test_usage_errors_exit_2(tiny_model):
    assert run_cli("build", str(tiny_model)).returncode == 2  # missing -t
    assert run_cli("build", str(tiny_model), "-t", "a/b:c", "--compress", "gzip").returncode == 2
    assert run_cli("frobnicate").returncode == 2


def test_reproducible_builds_from_the_cli(tiny_model, tmp_path):
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    first = _ok(run_cli("build", str(tiny_model), "-t", "reg.io/a:v1", "--json", env=env))
    second = _ok(
        run_cli(
            "build",
            str(tiny_model),
            "-t",
            "reg.io/a:v1",
            "--json",
            "--home",
            str(tmp_path / "h2"),
            env=env,
        )
    )
    assert json.loads(first.stdout)["digest"] == json.loads(second.stdout)["digest"]


def test_json_output_is_one_document_and_nothing_else(tiny_model):
    result = _ok(run_cli("build", str(tiny_model), "-t", "reg.io/a:v1", "--json"))
    document = json.loads(result.stdout)  # fails if anything else is on stdout
    assert document["reference"] == "reg.io/a:v1"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"reference": 1}, {"type": "object", "properties": {"reference": {"type": "string"}}}
        )


def test_version_and_module_entry_point():
    result = _ok(run_cli("--version"))
    assert result.stdout.startswith("modelpack, version ")


def test_tags_lists_a_repository_and_a_missing_tag_names_the_ones_that_exist(
    tiny_model, registry, settings, tmp_path
):
    repository = f"{registry.host}/cli/tagged"
    for tag in ("v1", "v2"):
        modelpack.build(tiny_model, f"{repository}:{tag}", settings=settings)
        modelpack.push(f"{repository}:{tag}", settings=settings)
    keys = modelpack.keygen(tmp_path / "k", password=None)
    modelpack.sign(f"{repository}:v1", keys.private_path, settings=settings)
    listed = run_cli("tags", repository, "--plain-http", "--json")
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    validate(document, CLI_TAGS, "tags --json")
    assert document["tags"] == ["v1", "v2"]  # the signature's sha256-<hex>.sig tag hidden
    everything = run_cli("tags", repository, "--plain-http", "--all")
    assert any(t.endswith(".sig") for t in everything.stdout.split())
    missing = run_cli("pull", f"{repository}:v3", "--plain-http", "-o", str(tmp_path / "x"))
    assert missing.returncode == 3
    assert f"tags in {repository}: v1, v2" in missing.stderr
    assert f"modelpack tags {repository}" in missing.stderr
    nothing = run_cli("tags", f"{registry.host}/cli/never-pushed", "--plain-http")
    assert nothing.returncode == 0 and nothing.stdout == ""
    assert "has no tags" in nothing.stderr


def test_push_summary_counts_mounted_blobs_and_speaks_in_the_right_number(
    tiny_model, registry, tmp_path
):
    first = f"{registry.host}/cli/mount-a:v1"
    second = f"{registry.host}/cli/mount-b:v1"
    same_config = {"SOURCE_DATE_EPOCH": "1700000000"}  # the same bytes: every blob mountable
    for ref in (first, second):
        assert run_cli("build", str(tiny_model), "-t", ref, "-q", env=same_config).returncode == 0
    assert run_cli("push", first, "--plain-http").returncode == 0
    pushed = run_cli("push", second, "--plain-http")
    assert pushed.returncode == 0, pushed.stderr
    assert "0 blobs sent (0 B), 11 mounted, 0 already there" in pushed.stderr
    one = tmp_path / "one-file"
    one.mkdir()
    (one / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes())
    built = run_cli("build", str(one), "-t", f"{registry.host}/cli/one:v1")
    assert "(1 layer, " in built.stderr, built.stderr


def test_a_failure_under_json_is_a_json_document_with_the_exit_code(tmp_path):
    from modelpack.schemas import CLI_ERROR

    failed = run_cli(
        "pull", f"127.0.0.1:{free_port()}/team/bert:v1", "--json", "-o", str(tmp_path / "x")
    )
    assert failed.returncode == 6
    document = json.loads(failed.stdout)
    validate(document, CLI_ERROR, "error document")
    assert document["error"]["exitCode"] == 6
    assert document["error"]["kind"] == "RegistryUnavailableError"
    assert "refused the connection" in document["error"]["message"]
    assert failed.stderr.startswith("Error: ")  # the human line stays where it was
    usage = run_cli("tags", "--json")
    assert usage.returncode == 2
    assert json.loads(usage.stdout)["error"]["exitCode"] == 2
    plain = run_cli("tags")
    assert plain.stdout == ""  # without --json nothing changes on stdout


def test_tables_have_no_trailing_spaces_and_stay_narrow_and_sizes_agree(
    tiny_model, registry, tmp_path
):
    """Issue 22 item 9: padded headers, a 190-column `ls` after a pull by digest, and build
    and pull naming two sizes for one model."""
    env = {"MODELPACK_HOME": str(tmp_path / "home")}
    ref = f"{registry.host}/team/sizes:v1"
    built = json.loads(_ok(run_cli("build", str(tiny_model), "-t", ref, "--json", env=env)).stdout)
    _ok(run_cli("push", ref, env=env))
    by_digest = f"{registry.host}/team/sizes@{built['digest']}"
    other = {"MODELPACK_HOME": str(tmp_path / "node")}
    pulled = _ok(run_cli("pull", by_digest, "--json", env=other))
    document = json.loads(pulled.stdout)
    validate(document, CLI_TRANSFER)
    assert document["size"] == built["size"]
    built_line = _ok(run_cli("build", str(tiny_model), "-t", ref, env=env)).stderr
    size = modelpack.human_size(built["size"])
    assert f", {size})" in built_line
    out_line = _ok(run_cli("pull", ref, "-o", str(tmp_path / "out"), env=other)).stderr
    assert f"{len(document['files'])} files, {size} (" in out_line, out_line
    for command in (["ls"], ["inspect", ref], ["cache", "ls"], ["tags", ref.rsplit(":", 1)[0]]):
        shown = _ok(run_cli(*command, env=other if command[0] == "cache" else env)).stdout
        lines = shown.splitlines()
        assert lines and all(line == line.rstrip() for line in lines), (command, shown)
    listed = _ok(run_cli("ls", env=other)).stdout
    assert max(map(len, listed.splitlines())) < 140, listed
    assert f"sha256:{built['digest'][7:19]}…" in listed
