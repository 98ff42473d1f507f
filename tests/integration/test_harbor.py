"""modelpack against a real Harbor (v2.15.2 and main, built from ../shared/peer-src).

Every test runs against both versions (the ``harbor`` fixture, tests/conftest.py): the
accounts Harbor users have, transfers with identical files and digests, what Harbor's
own API shows of our model, and the OCI 1.1 referrers API (the only one we can run here).
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import time
from pathlib import Path

import pytest
import requests
from support.dragonfly import DragonflyCluster, build_dragonfly
from support.harbor import PEER_SRC, HarborTeam, build_harbor
from support.helpers import run_cli, tree_files

import modelpack
from benchmarks.harbor_preheat import NsHarbor
from modelpack.oci.reference import Reference
from modelpack.registry.client import open_repository
from modelpack.settings import Settings
from modelpack.testing import RegistryServer, make_tiny_model
from modelpack.testing.harbor import ADMIN, VERSIONS, HarborServer

if not PEER_SRC.is_dir():  # a clone on its own: one line says what is missing
    pytest.skip(
        f"Harbor tests need the source snapshots in {PEER_SRC} (absent)", allow_module_level=True
    )

OTHER = {"cnai": "cncf", "cncf": "cnai"}


def _env(credentials: tuple[str, str]) -> dict[str, str]:
    return {"MODELPACK_USERNAME": credentials[0], "MODELPACK_PASSWORD": credentials[1]}


def _ok(result):  # noqa: ANN001, ANN202 - a CompletedProcess
    assert result.returncode == 0, result.stderr
    return result


def _build(model: Path, ref: str, *args: str) -> None:
    _ok(run_cli("build", str(model), "-t", ref, "-q", *args))


def _push(ref: str, env: dict[str, str] | None = None) -> str:
    return json.loads(_ok(run_cli("push", ref, "--json", env=env)).stdout)["digest"]


def _pull(ref: str, out: Path, env: dict[str, str] | None = None, *args: str) -> dict:
    pulled = run_cli("pull", ref, "-o", str(out), "--json", *args, env=env)
    return json.loads(_ok(pulled).stdout)


def _login(harbor: HarborTeam, credentials: tuple[str, str]) -> None:
    user, password = credentials
    _ok(run_cli("login", harbor.host, "-u", user, "--password-stdin", input=password + "\n"))


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# -- (a) auth as Harbor users have it ---------------------------------------------


def _give_credentials(how: str, harbor: HarborTeam, credentials: tuple[str, str], tmp_path):  # noqa: ANN001, ANN202
    """Credentials the three ways a user gives them; the environment for the commands."""
    if how == "login":
        _login(harbor, credentials)
        return {}
    if how == "docker-config":
        auth = base64.b64encode(":".join(credentials).encode()).decode()
        config = Path(os.environ["DOCKER_CONFIG"])  # the test's own (tests/conftest.py)
        config.mkdir(exist_ok=True)
        (config / "config.json").write_text(json.dumps({"auths": {harbor.host: {"auth": auth}}}))
        return {}
    return _env(credentials)


@pytest.mark.interop(
    "Harbor",
    "push + pull as admin, a project member, a robot account",
    "credentials by `login --password-stdin`, docker config and MODELPACK_USERNAME/PASSWORD: identical files, the digest Harbor lists",
)
@pytest.mark.parametrize("how", ["login", "docker-config", "environment"])
@pytest.mark.parametrize("who", ["admin", "member", "robot"])
def test_admin_member_and_robot_push_and_pull(harbor, who, how, tiny_model, tmp_path):
    credentials = {"admin": harbor.admin, "member": harbor.member, "robot": harbor.pusher}[who]
    if who == "robot":
        assert credentials[0] == "robot$team+ci"  # the name Harbor gives, with its $
    env = _give_credentials(how, harbor, credentials, tmp_path)
    ref = harbor.ref(harbor.private, f"{who}-{how}")
    _build(tiny_model, ref)
    digest = _push(ref, env)
    pulled = _pull(ref, tmp_path / "out", {**env, "MODELPACK_HOME": str(tmp_path / "node")})
    assert pulled["digest"] == digest
    assert tree_files(tmp_path / "out") == tree_files(tiny_model)
    assert harbor.artifact(harbor.private, f"{who}-{how}", "v1")["digest"] == digest


@pytest.mark.interop(
    "Harbor",
    "a pull-only robot pushes",
    "exit 4, one line naming the robot and Harbor's reason; nothing tagged",
)
def test_a_pull_only_robot_cannot_push(harbor, tiny_model, tmp_path):
    ref, again = (
        harbor.ref(harbor.private, "robot-reader"),
        harbor.ref(harbor.private, "robot-reader", "v2"),
    )
    _build(tiny_model, ref)
    _push(ref, _env(harbor.admin))
    assert _pull(ref, tmp_path / "out", _env(harbor.puller))["digest"]  # it may pull
    _build(tiny_model, again)
    refused = run_cli("push", again, env=_env(harbor.puller))
    assert refused.returncode == 4, refused.stderr
    line = _one_line(refused.stderr)
    assert "refused robot$team+reader" in line and "action: push" in line, line
    artifacts = harbor.server.api(
        "GET",
        f"/projects/{harbor.private}/repositories/robot-reader/artifacts",
        params={"with_tag": "true"},
    ).json()
    assert [t["name"] for a in artifacts for t in a.get("tags") or []] == ["v1"]


@pytest.mark.interop(
    "Harbor",
    "anonymous pull",
    "a private project refuses it (exit 4, one line), a public one serves identical files",
)
def test_a_private_project_refuses_anonymous_pulls_a_public_one_allows_them(
    harbor, tiny_model, tmp_path
):
    private, public = harbor.ref(harbor.private, "anon"), harbor.ref(harbor.public, "anon")
    for ref in (private, public):
        _build(tiny_model, ref)
        _push(ref, _env(harbor.admin))
    refused = run_cli("pull", private, "-o", str(tmp_path / "no"))
    assert refused.returncode == 4, refused.stderr
    _one_line(refused.stderr)
    assert not (tmp_path / "no").exists()
    _pull(public, tmp_path / "yes")
    assert tree_files(tmp_path / "yes") == tree_files(tiny_model)


# -- (b) transfers: identical files and digests --------------------------------------


@pytest.mark.interop(
    "Harbor",
    "push, tag, `tags`, `inspect --remote`, pull by digest",
    "the same digest everywhere, identical files",
)
def test_push_pull_tags_and_inspect_remote(harbor, tiny_model, tmp_path):
    env = _env(harbor.admin)
    ref = harbor.ref(harbor.private, "bert")
    _build(tiny_model, ref)
    digest = _push(ref, env)
    _ok(run_cli("tag", ref, harbor.ref(harbor.private, "bert", "v2")))
    assert _push(harbor.ref(harbor.private, "bert", "v2"), env) == digest
    token = requests.get(
        f"{harbor.server.url}/service/token",
        params={"service": "harbor-registry", "scope": f"repository:{harbor.private}/bert:pull"},
        auth=harbor.pusher,
        timeout=30,
    ).json()
    assert token["expires_in"] == 1800  # Harbor's bearer tokens last 30 minutes by default
    tags = run_cli("tags", f"{harbor.host}/{harbor.private}/bert", "--json", env=env)
    assert json.loads(_ok(tags).stdout)["tags"] == ["v1", "v2"]
    inspected = json.loads(_ok(run_cli("inspect", ref, "--remote", "--json", env=env)).stdout)
    assert inspected["digest"] == digest
    assert {layer["path"] for layer in inspected["layers"]} >= set(tree_files(tiny_model))
    pulled = _pull(f"{harbor.host}/{harbor.private}/bert@{digest}", tmp_path / "out", env)
    assert pulled["digest"] == digest
    assert tree_files(tmp_path / "out") == tree_files(tiny_model)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return modelpack.keygen(tmp_path_factory.mktemp("keys") / "harbor", password=None)


def _sign(ref: str, key: Path, *args: str, env: dict[str, str] | None = None) -> None:
    _ok(run_cli("sign", ref, "--key", str(key), *args, env=env))


@pytest.mark.interop(
    "Harbor",
    "sign (cosign-style, model-signing bundle), verify, `pull --verify-key`",
    "unsigned refused (exit 5), signed accepted with identical files and `model.sig`, another key exit 5",
)
def test_sign_verify_and_pull_verify_key(harbor, keys, tiny_model, tmp_path):
    env = _env(harbor.admin)
    ref = harbor.ref(harbor.private, "signed")
    _build(tiny_model, ref)
    digest = _push(ref, env)
    unsigned = run_cli("pull", ref, "-o", str(tmp_path / "no"), "--verify-key",
                       str(keys.public_path), env=env)  # fmt: skip
    assert unsigned.returncode == 5 and not (tmp_path / "no").exists()
    _sign(ref, keys.private_path, env=env)
    _sign(ref, keys.private_path, "--model-signing", env=env)
    verified = json.loads(
        _ok(run_cli("verify", ref, "--key", str(keys.public_path), "--json", env=env)).stdout
    )
    assert verified["verified"] is True
    pulled = _pull(ref, tmp_path / "out", env, "--verify-key", str(keys.public_path),
                   "--model-signature")  # fmt: skip
    assert pulled["digest"] == digest
    assert tree_files(tmp_path / "out") == {**tree_files(tiny_model),
                                            "model.sig": (tmp_path / "out/model.sig").read_bytes()}  # fmt: skip
    other = modelpack.keygen(tmp_path / "other", password=None)
    wrong = run_cli("verify", ref, "--key", str(other.public_path), env=env)
    assert wrong.returncode == 5
    _one_line(wrong.stderr)


@pytest.mark.interop(
    "Harbor",
    "copy project -> project -> distribution -> Harbor",
    "digest kept, signature and bundle arrive, verify and `pull --verify-key` pass at every hop",
)
def test_copy_across_projects_to_distribution_and_back(
    harbor, registry, keys, tiny_model, tmp_path
):
    """Signatures and bundles travel along: Harbor keeps them as referrers (its API),
    distribution 2.8 in the tag schema."""
    _login(harbor, harbor.admin)
    source = harbor.ref(harbor.private, "travels")
    _build(tiny_model, source)
    digest = _push(source)
    _sign(source, keys.private_path)
    _sign(source, keys.private_path, "--model-signing")
    hops = [
        harbor.ref(harbor.second, "travels"),
        f"{registry.host}/from-harbor-{harbor.version.replace('.', '-')}/travels:v1",
        harbor.ref(harbor.public, "travels-back"),
    ]
    previous = source
    for target in hops:
        copied = json.loads(_ok(run_cli("copy", previous, target, "--json")).stdout)
        assert copied["digest"] == digest
        assert copied["referrers"] >= 2  # the cosign signature and the model-signing bundle
        _ok(run_cli("verify", target, "--key", str(keys.public_path)))
        out = tmp_path / f"out-{hops.index(target)}"
        _pull(target, out, None, "--verify-key", str(keys.public_path), "--model-signature")
        assert set(tree_files(out)) == set(tree_files(tiny_model)) | {"model.sig"}
        previous = target
    at_distribution = requests.get(
        f"http://{hops[1].split('/', 1)[0]}/v2/{hops[1].split('/', 1)[1].rsplit(':', 1)[0]}/tags/list",
        timeout=10,
    ).json()["tags"]
    assert f"sha256-{digest.split(':')[1]}" in at_distribution  # the tag schema there


# -- (c) what Harbor shows ---------------------------------------------------------------


def _files_of(tree: list[dict], prefix: str = "") -> set[str]:
    """The paths in Harbor's FILES addition (a tree of {name, type, children})."""
    paths = set()
    for node in tree:
        path = f"{prefix}{node['name']}"
        if node.get("type") == "directory":
            paths |= _files_of(node.get("children") or [], f"{path}/")
        else:
            paths.add(path)
    return paths


@pytest.mark.interop(
    "Harbor",
    "what Harbor's API shows of our model",
    "type CNAI, README, LICENSE and file list: v2.15.2 with the cnai names, main with cncf (by build, the registries config, a converting copy)",
)
@pytest.mark.parametrize("how", ["build --media-types", "registries config", "copy --media-types"])
def test_harbor_shows_our_model_readme_license_and_files(
    harbor, how, tiny_model, tmp_path, monkeypatch
):
    """v2.15.2 renders the vnd.cnai names, main the vnd.cncf ones: written as each needs
    (build --media-types, the per-registry setting, a converting copy), Harbor's API shows
    a model with its README, LICENSE and file list."""
    wants, name = harbor.renders, f"shown-{how.split()[0]}"
    ref = harbor.ref(harbor.private, name)
    _login(harbor, harbor.admin)
    if how == "build --media-types":
        _build(tiny_model, ref, "--media-types", wants)
        _push(ref)
    elif how == "registries config":
        config = tmp_path / "config.toml"
        config.write_text(f'[registries."{harbor.host}"]\nmedia_types = "{wants}"\n')
        monkeypatch.setenv("MODELPACK_CONFIG", str(config))
        _build(tiny_model, ref)
        _push(ref)
    else:
        source = harbor.ref(harbor.private, f"{name}-src")
        _build(tiny_model, source, "--media-types", OTHER[wants])
        _push(source)
        _ok(run_cli("copy", source, ref, "--media-types", wants))
    artifact = harbor.artifact(harbor.private, name, "v1", with_tag="true")
    assert artifact["artifact_type"] == f"application/vnd.{wants}.model.manifest.v1+json"
    assert artifact["type"] == "CNAI", artifact["type"]  # Harbor's name for a model
    readme = harbor.addition(harbor.private, name, "v1", "readme.md")
    assert readme.status_code == 200, readme.text
    assert readme.content == (tiny_model / "README.md").read_bytes()
    license_text = harbor.addition(harbor.private, name, "v1", "license")
    assert license_text.status_code == 200, license_text.text
    assert license_text.content == (tiny_model / "LICENSE").read_bytes()
    files = harbor.addition(harbor.private, name, "v1", "files")
    assert files.status_code == 200, files.text
    assert _files_of(files.json()) == set(tree_files(tiny_model))


@pytest.mark.interop(
    "Harbor",
    "the other media-type family",
    "v2.15.2 sees no model in a cncf push, main none in a cnai push; we still pull it identical",
)
def test_the_other_names_are_plain_files_to_this_version(harbor, tiny_model, tmp_path):
    """Why media_types exists: the family a version does not read is no model to it."""
    ref = harbor.ref(harbor.private, "not-a-model")
    _build(tiny_model, ref, "--media-types", OTHER[harbor.renders])
    _push(ref, _env(harbor.admin))
    artifact = harbor.artifact(harbor.private, "not-a-model", "v1")
    assert artifact["type"] != "CNAI", artifact["type"]
    assert harbor.addition(harbor.private, "not-a-model", "v1", "readme.md").status_code != 200
    _pull(ref, tmp_path / "out", _env(harbor.admin))  # ... and we still pull it, identical
    assert tree_files(tmp_path / "out") == tree_files(tiny_model)


def _harbor_check(host: str, env: dict[str, str] | None = None) -> dict:
    doctor = json.loads(run_cli("doctor", host, "--json", env=env).stdout)
    (check,) = [c for c in doctor["checks"] if c["name"] == "harbor"]
    return check


@pytest.mark.interop(
    "Harbor",
    "`modelpack doctor HOST`",
    "the version Harbor tells a logged-in user and the names it renders; anonymously, says to log in",
)
def test_doctor_names_the_media_types_this_version_renders(harbor, tmp_path, monkeypatch):
    """Harbor tells its version to a logged-in user only: anonymously doctor says so."""
    version = harbor.server.api("GET", "/systeminfo").json()["harbor_version"]
    expected = {"v2.15.2": "v2.15.2-080b0220", "main": "v2.16.0-c50c7ddd"}[harbor.version]
    assert version == expected  # linked in at build time
    anonymous = _harbor_check(harbor.host)
    assert anonymous["status"] == "warn" and "logged-in user only" in anonymous["detail"]
    assert f"modelpack login {harbor.host}" in anonymous["fix"]
    for who in (harbor.admin, harbor.puller):  # a robot account may read it too
        check = _harbor_check(harbor.host, _env(who))
        assert f"Harbor {version} renders models written with {harbor.renders}" in check["detail"]
        assert check["status"] == ("warn" if harbor.renders == "cnai" else "ok"), check
    if harbor.renders == "cnai":  # the fix names the setting, brackets and all
        shown = run_cli("doctor", harbor.host, env=_env(harbor.admin))
        assert f'media_types = "cnai" under [registries."{harbor.host}"]' in shown.stdout
    config = tmp_path / "config.toml"
    config.write_text(f'[registries."{harbor.host}"]\nmedia_types = "{harbor.renders}"\n')
    monkeypatch.setenv("MODELPACK_CONFIG", str(config))
    assert _harbor_check(harbor.host, _env(harbor.admin))["status"] == "ok"


# -- (d) referrers: Harbor's OCI 1.1 API ---------------------------------------------------


@pytest.mark.interop(
    "Harbor",
    "referrers",
    "the OCI 1.1 referrers API, read and written (no `sha256-<hex>` fallback tag); signatures are Harbor accessories",
)
def test_signatures_are_harbor_accessories_and_referrers_through_the_api(
    harbor, keys, tiny_model, home, monkeypatch
):
    env = _env(harbor.admin)
    ref = harbor.ref(harbor.private, "referred")
    _build(tiny_model, ref)
    digest = _push(ref, env)
    _sign(ref, keys.private_path, env=env)
    _sign(ref, keys.private_path, "--model-signing", env=env)
    # Harbor's own referrers API lists both
    listed = requests.get(
        f"{harbor.server.url}/v2/{harbor.private}/referred/referrers/{digest}",
        auth=harbor.admin,
        headers={"Accept": "application/vnd.oci.image.index.v1+json"},
        timeout=30,
    )
    assert listed.status_code == 200, listed.text
    types = {m.get("artifactType") for m in listed.json()["manifests"]}
    assert "application/vnd.dev.cosign.artifact.sig.v1+json" in types
    assert "application/vnd.dev.sigstore.bundle.v0.3+json" in types
    # ... as accessories of the model in Harbor's artifact API
    artifact = harbor.artifact(harbor.private, "referred", digest, with_accessory="true")
    accessories = {a["type"] for a in artifact.get("accessories") or []}
    assert "signature.cosign" in accessories, artifact.get("accessories")
    assert len(artifact["accessories"]) >= 2, artifact["accessories"]
    # our writes used the API: no referrers-tag-schema index was written ...
    tags = json.loads(
        _ok(
            run_cli("tags", f"{harbor.host}/{harbor.private}/referred", "--all", "--json", env=env)
        ).stdout  # fmt: skip
    )["tags"]
    assert f"sha256-{digest.split(':')[1]}" not in tags
    assert f"sha256-{digest.split(':')[1]}.sig" in tags  # cosign's tag form, always written
    # ... and our reads do too
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    repository = open_repository(Reference.parse(ref), Settings(home=home))
    found = repository.referrers(repository.resolve("v1"))
    assert repository.referrers_api is True
    assert {d.artifact_type for d in found} >= {
        "application/vnd.dev.cosign.artifact.sig.v1+json",
        "application/vnd.dev.sigstore.bundle.v0.3+json",
    }


# -- governance: rules a project sets, met with one line each --------------------------


@pytest.mark.interop(
    "Harbor",
    "re-push of a tag an immutability rule protects",
    "exit 1, one line naming the rule and Harbor's words; the tag keeps its artifact, nothing else is added",
)
def test_an_immutable_tag_refuses_a_repush_in_one_line(harbor, tiny_model, tmp_path):
    harbor.server.create_project("locked")
    harbor.server.protect_tags("locked", "v*")
    env, ref = _env(harbor.admin), harbor.ref("locked", "bert")
    _build(tiny_model, ref)
    first = _push(ref, env)
    _build(make_tiny_model(tmp_path / "other", seed=5), ref)
    refused = run_cli("push", ref, env=env)
    assert refused.returncode == 1, refused.stderr
    line = _one_line(refused.stderr)
    assert "tag immutability rule" in line and "configured as immutable" in line, line
    assert harbor.artifact("locked", "bert", "v1")["digest"] == first
    listed = harbor.server.api("GET", "/projects/locked/repositories/bert/artifacts").json()
    assert [a["digest"] for a in listed] == [first]


@pytest.mark.interop(
    "Harbor",
    "a push over the project's storage quota",
    "exit 1, one line with Harbor's numbers; once raised, the same push completes without sending what Harbor holds",
)
def test_a_push_over_the_quota_says_so_and_completes_once_raised(harbor, tmp_path):
    harbor.server.create_project("small")
    harbor.server.set_quota("small", 20_000)  # the small files fit, the 127 kB weights do not
    model = make_tiny_model(tmp_path / "fresh", seed=11)  # blobs Harbor has nowhere else
    env, ref = _env(harbor.admin), harbor.ref("small", "bert")
    _build(model, ref)
    refused = run_cli("push", ref, env=env)
    assert refused.returncode == 1, refused.stderr
    line = _one_line(refused.stderr)
    assert "storage quota" in line and "exceed the configured upper limit" in line, line
    manifest = json.loads(_ok(run_cli("inspect", ref, "--json")).stdout)["manifest"]
    digests = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
    held = {
        d
        for d in digests
        if requests.head(
            f"{harbor.server.url}/v2/small/bert/blobs/{d}", auth=harbor.admin, timeout=30
        ).status_code
        == 200
    }
    assert 0 < len(held) < len(digests), held  # the small blobs went in before the refusal
    harbor.server.set_quota("small", -1)
    pushed = json.loads(_ok(run_cli("push", ref, "--json", env=env)).stdout)
    assert pushed["skipped"] == len(held) and pushed["transferred"] == len(digests) - len(held)
    _pull(ref, tmp_path / "out", env)
    assert tree_files(tmp_path / "out") == tree_files(model)


def _stored(harbor: HarborTeam) -> set[str]:
    """The digests whose content is in the registry's storage (manifests are blobs there)."""
    blobs = harbor.server.root / "registry/docker/registry/v2/blobs/sha256"
    return {f"sha256:{data.parent.name}" for data in blobs.glob("*/*/data")}


def _blobs_of(ref: str) -> dict[str, str]:
    """A model's blobs in the local store: each file's path, and "" for its config, to the
    digest."""
    inspected = json.loads(_ok(run_cli("inspect", ref, "--json")).stdout)
    return {
        "": inspected["manifest"]["config"]["digest"],
        **{layer["path"]: layer["digest"] for layer in inspected["layers"]},
    }


@pytest.mark.interop(
    "Harbor",
    "tag retention, then garbage collection",
    "the kept tag pulls identical files and its signature verifies; the removed tag is gone (exit 3), its own blobs leave the storage, the blobs it shared stay",
)
def test_retention_and_garbage_collection_leave_the_kept_tag_whole(harbor, keys, tmp_path):
    """A retention policy keeps `v*` and removes `dev-1`; garbage collection (untagged
    artifacts too) then deletes what nothing references. Both models carry the same
    config.json and README.md, which no other test pushes: blobs only these two share."""
    harbor.server.create_project("pruned")
    env = _env(harbor.admin)
    models = {"v1": make_tiny_model(tmp_path / "v1", seed=21)}
    models["dev-1"] = make_tiny_model(tmp_path / "dev-1", seed=22)  # other weights
    for model in models.values():
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "_name_or_path": "pruned/bert"}))
        with (model / "README.md").open("a") as readme:
            readme.write("\nKept as v1, removed as dev-1 by the retention test.\n")
        for name in ("config.json", "README.md"):  # a tar layer (cnai's docs) holds the mtime
            os.utime(model / name, (1_700_000_000, 1_700_000_000))
    kept, dropped = harbor.ref("pruned", "bert", "v1"), harbor.ref("pruned", "bert", "dev-1")
    for tag, ref in (("v1", kept), ("dev-1", dropped)):
        _build(models[tag], ref, "--media-types", harbor.renders)
    kept_digest, dropped_digest = _push(kept, env), _push(dropped, env)
    _sign(kept, keys.private_path, env=env)
    signatures = requests.get(
        f"{harbor.server.url}/v2/pruned/bert/referrers/{kept_digest}", auth=harbor.admin, timeout=30
    ).json()["manifests"]
    # the .sig tag's manifest and the OCI 1.1 referrer, both accessories of v1 to Harbor
    assert len(signatures) == 2, signatures
    types = {s.get("artifactType") for s in signatures}
    assert "application/vnd.dev.cosign.artifact.sig.v1+json" in types, signatures
    kept_layers, dropped_layers = _blobs_of(kept), _blobs_of(dropped)
    kept_blobs, dropped_blobs = set(kept_layers.values()), set(dropped_layers.values())
    shared, own = kept_blobs & dropped_blobs, dropped_blobs - kept_blobs
    assert {kept_layers["config.json"], kept_layers["README.md"]} <= shared
    assert own == {dropped_layers[""], dropped_layers["model.safetensors"]}  # config, weights
    before = _stored(harbor)
    assert kept_blobs | dropped_blobs | {kept_digest, dropped_digest} <= before

    policy = harbor.server.create_retention("pruned", "v*")
    execution, tasks = harbor.server.run_retention(policy)
    assert execution["status"] == "Success", execution
    assert [(t["repository"], t["total"], t["retained"]) for t in tasks] == [("bert", 2, 1)], tasks
    artifacts = harbor.server.api(
        "GET", "/projects/pruned/repositories/bert/artifacts", params={"with_tag": "true"}
    ).json()
    assert [(a["digest"], [t["name"] for t in a["tags"]]) for a in artifacts] == [
        (kept_digest, ["v1"])
    ]
    assert own | {dropped_digest} <= _stored(harbor)  # retention leaves the storage to GC

    gc = harbor.server.garbage_collect(delete_untagged=True)
    assert gc["job_status"] == "Success", gc
    log = harbor.server.gc_log(gc["id"])
    counted = re.search(r"(\d+) blobs and (\d+) manifests eligible for deletion", log)
    assert counted, log[-3000:]
    assert int(counted[1]) >= len(own) and int(counted[2]) >= 1, counted[0]
    assert "success to run gc in job" in log, log[-3000:]
    after = _stored(harbor)
    assert not (own | {dropped_digest}) & after, "GC left the removed tag's own blobs"
    signature_digests = {s["digest"] for s in signatures}
    assert kept_blobs | {kept_digest} | signature_digests <= after, "GC deleted a kept blob"
    accessories = harbor.artifact("pruned", "bert", "v1", with_accessory="true")["accessories"]
    assert {a["digest"] for a in accessories} == signature_digests, accessories

    node = {**env, "MODELPACK_HOME": str(tmp_path / "node")}  # nothing from the build's store
    pulled = _pull(kept, tmp_path / "out", node)
    assert pulled["digest"] == kept_digest
    assert tree_files(tmp_path / "out") == tree_files(models["v1"])
    verified = run_cli("verify", kept, "--key", str(keys.public_path), "--json", env=node)
    assert json.loads(_ok(verified).stdout)["verified"] is True
    gone = run_cli("pull", dropped, "-o", str(tmp_path / "gone"), env=node)
    assert gone.returncode == 3, gone.stderr
    _one_line(gone.stderr)
    assert not (tmp_path / "gone").exists()
    by_digest = run_cli("pull", f"{harbor.host}/pruned/bert@{dropped_digest}", "-o",
                        str(tmp_path / "gone"), env=node)  # fmt: skip
    assert by_digest.returncode == 3, by_digest.stderr


# -- a proxy-cache project and a replication rule -------------------------------------------


@pytest.mark.interop(
    "Harbor",
    "pull through a proxy-cache project in front of a distribution",
    "identical files and digest; a second pull takes no blob from the upstream; once Harbor has cached the manifest, a pull works with the upstream stopped",
)
def test_pull_through_a_proxy_cache_project(harbor, tiny_model, tmp_path):
    """Harbor caches the blobs while it streams them, and the manifest some 20 s later
    (its proxy waits for the blobs before it pushes the manifest to its own registry)."""
    with RegistryServer() as upstream:
        source = f"{upstream.host}/ml/bert:v1"
        _build(tiny_model, source)
        digest = _push(source)
        endpoint = harbor.server.create_registry("upstream-distribution", upstream.url)
        harbor.server.create_project("cache", registry_id=endpoint)
        env, through = _env(harbor.admin), harbor.ref("cache", "ml/bert")

        def pull(name: str) -> None:
            out = tmp_path / name
            pulled = _pull(through, out, {**env, "MODELPACK_HOME": str(tmp_path / f"{name}-home")})
            assert pulled["digest"] == digest
            assert tree_files(out) == tree_files(tiny_model)

        def blobs_taken() -> int:
            return upstream.access_log().count("GET /v2/ml/bert/blobs/")

        pull("first")
        assert blobs_taken() > 0  # ... through Harbor, from the upstream
        before = blobs_taken()
        pull("second")
        assert blobs_taken() == before  # every blob from Harbor's cache
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # the manifest lands in Harbor's own registry
            cached = harbor.server.api(
                "GET", "/projects/cache/repositories/ml%252Fbert/artifacts", expect=(200, 404)
            )
            if cached.status_code == 200 and [a["digest"] for a in cached.json()] == [digest]:
                break
            time.sleep(1)
        else:
            pytest.fail("Harbor did not cache the manifest within 90 s")
        upstream.stop()
        pull("offline")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:  # as core binds it: TIME_WAIT from a last run is no use
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.interop(
    "Harbor",
    "a push-based replication rule to a distribution, run through the API",
    "the model, its cosign-style signature and its model-signing bundle arrive with the same digests; `verify` and `pull --verify-key` pass on the copy",
)
@pytest.mark.parametrize("version", VERSIONS)
def test_a_replication_rule_carries_the_model_and_its_signatures(
    version, registry, keys, tiny_model, tmp_path
):
    """Harbor's core reads its own projects for a replication at http://127.0.0.1:8080 (where
    its deployment runs core; src/pkg/reg/adapter/harbor/base/client.go), so this test runs
    a Harbor of its own on that port."""
    if not PEER_SRC.is_dir():
        pytest.skip(f"Harbor tests need the source snapshots in {PEER_SRC} (absent)")
    assert _port_free(8080), "replication needs Harbor's core on 127.0.0.1:8080, which is busy"
    build_harbor(version)
    with HarborServer(version=version, port=8080) as server:
        server.create_project("team")
        env = _env((ADMIN, server.admin_password))
        ref = f"{server.host}/team/replicated:v1"
        _build(tiny_model, ref)
        digest = _push(ref, env)
        _sign(ref, keys.private_path, env=env)
        _sign(ref, keys.private_path, "--model-signing", env=env)
        referrers = requests.get(
            f"{server.url}/v2/team/replicated/referrers/{digest}",
            auth=(ADMIN, server.admin_password),
            timeout=30,
        ).json()["manifests"]
        assert {r.get("artifactType") for r in referrers} >= {
            "application/vnd.dev.cosign.artifact.sig.v1+json",
            "application/vnd.dev.sigstore.bundle.v0.3+json",
        }, referrers
        namespace = f"replica-{version.replace('.', '-')}"
        endpoint = server.create_registry("replica-distribution", registry.url)
        execution = server.replicate("to-distribution", endpoint, "team/replicated", namespace)
        assert execution["status"] == "Succeed" and execution["succeed"] >= 1, execution
    copy = f"{registry.host}/{namespace}/replicated:v1"
    at = f"{registry.url}/v2/{namespace}/replicated"
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    head = requests.head(f"{at}/manifests/v1", headers=accept, timeout=10)
    assert head.headers.get("Docker-Content-Digest") == digest, head.status_code
    for referrer in referrers:  # signature and bundle, each by its digest
        manifest = requests.get(f"{at}/manifests/{referrer['digest']}", headers=accept, timeout=10)
        assert manifest.status_code == 200, referrer
        if referrer.get("artifactType") == "application/vnd.dev.sigstore.bundle.v0.3+json":
            assert json.loads(manifest.content)["subject"]["digest"] == digest
    tags = requests.get(f"{at}/tags/list", timeout=10).json()["tags"]
    assert f"sha256-{digest.split(':')[1]}.sig" in tags, tags  # cosign's tag came along
    verified = json.loads(
        _ok(run_cli("verify", copy, "--key", str(keys.public_path), "--json")).stdout
    )
    assert verified["verified"] is True
    _pull(copy, tmp_path / "out", None, "--verify-key", str(keys.public_path))
    assert tree_files(tmp_path / "out") == tree_files(tiny_model)


# -- P2P preheat (the seed pipeline itself: test_harbor_preheat.py) ----------------------


@pytest.fixture(scope="module")
def local_df(tmp_path_factory):  # noqa: ANN201
    """Dragonfly's manager, scheduler and seed peer on 127.0.0.1 (no nodes)."""
    cluster_df = DragonflyCluster(
        build_dragonfly(), tmp_path_factory.mktemp("dragonfly-local"), "http://127.0.0.1:9",
        peer_count=0,
    )  # fmt: skip
    cluster_df.start()
    yield cluster_df
    cluster_df.cleanup()


@pytest.mark.interop(
    "Harbor",
    "P2P preheat of a Harbor on 127.0.0.1",
    "the execution fails: Dragonfly's manager refuses to fetch the manifest from a loopback address",
)
def test_a_harbor_on_loopback_cannot_be_preheated(harbor, local_df, tiny_model):
    """Why tests/integration/test_harbor_preheat.py runs Harbor in a network namespace:
    Harbor's Dragonfly driver asks the manager to preheat the manifest at Harbor's external
    URL, and the v2.5.0 manager dials only global unicast addresses."""
    project = "preheat-loopback"
    ns = NsHarbor.running(harbor.server)
    ns.create_project(project)  # private: the session's Harbor lists its public projects
    provider = ns.create_dragonfly_instance(
        f"dragonfly-{harbor.version}", local_df.manager_url, local_df.token
    )
    ns.create_policy(project, "seed", provider)
    ref = f"{harbor.host}/{project}/bert:v1"
    _build(tiny_model, ref, "--media-types", harbor.renders)
    _push(ref, _env(harbor.admin))
    execution = ns.execute(project, "seed")
    ended = ns.wait_execution(project, "seed", execution, timeout=300)
    assert ended["status"] == "Error", ended
    jobs = ns.log("jobservice")
    assert "ip 127.0.0.1 is invalid" in jobs, jobs[-3000:]
    print(next(line for line in jobs.splitlines() if "is invalid" in line))
