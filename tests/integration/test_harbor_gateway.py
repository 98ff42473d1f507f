"""``modelpack serve`` in front of a real Harbor (v2.15.2 and main): issue 29, item 9.

A namespace-less gateway (hub repo ``team/x`` is Harbor project ``team``, repository
``x``) with no credentials of its own: every client's credentials pass through, users as
``user:password`` and robots as ``robot$project+name:secret`` (``HF_TOKEN``).  Discovery
goes through Harbor's project API (Harbor gives ``/v2/_catalog`` to admins only).
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import requests
from support.gateway import Gateway
from support.harbor import PEER_SRC
from support.helpers import run_cli, tree_files

from modelpack.testing import make_tiny_model

if not PEER_SRC.is_dir():
    pytest.skip(
        f"Harbor tests need the source snapshots in {PEER_SRC} (absent)", allow_module_level=True
    )

LIST_AS = """
import json, sys
from huggingface_hub import HfApi
api = HfApi()
try:
    print(json.dumps({"all": [m.id for m in api.list_models()],
                      "search": [m.id for m in api.list_models(search="hfbe")]}))
except Exception as exc:
    print(json.dumps({"status": exc.response.status_code}))
"""

UPLOAD = """
import json, sys
from huggingface_hub import HfApi
args = json.loads(sys.argv[1])
api = HfApi()
def attempt(call):
    try:
        return {"ok": call()}
    except Exception as exc:
        response = getattr(exc, "response", None)
        return {"error": type(exc).__name__, "status": getattr(response, "status_code", None),
                "message": (response.headers.get("X-Error-Message") if response is not None
                            else None) or str(exc)[:600]}
out = {}
if args.get("create"):
    out["create"] = attempt(lambda: str(api.create_repo(args["repo"], exist_ok=True)))
out["upload"] = attempt(lambda: api.upload_folder(repo_id=args["repo"],
                                                  folder_path=args["folder"]).oid)
print(json.dumps(out))
"""


def _ok(result):  # noqa: ANN001, ANN202
    assert result.returncode == 0, result.stderr
    return result


def _token(credentials: tuple[str, str]) -> str:
    return ":".join(credentials)  # HF_TOKEN as a client sends it: Bearer user:password


def _basic(credentials: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(_token(credentials).encode()).decode()}


@pytest.fixture(scope="module")
def served(harbor, tmp_path_factory):
    """The gateway, and models in a private project, a second private one and a public one."""
    work = tmp_path_factory.mktemp(f"harbor-serve-{harbor.version}")
    model = make_tiny_model(work / "model")
    env = {"MODELPACK_USERNAME": harbor.admin[0], "MODELPACK_PASSWORD": harbor.admin[1]}
    for project, name in ((harbor.private, "hfbert"), (harbor.second, "hfsecret"),
                          (harbor.public, "hfopen")):  # fmt: skip
        ref = harbor.ref(project, name)
        _ok(run_cli("build", str(model), "-t", ref, "-q"))
        _ok(run_cli("push", ref, env=env))
    gateway = Gateway(harbor.host, work / "gateway").start()
    yield gateway, model
    gateway.stop()


def _snapshot(gateway, repo, token, hf_home):  # noqa: ANN001, ANN202
    return gateway.hf([["snapshot", repo, "v1"], ["file", repo, "config.json", "v1"]],
                      hf_home, token)  # fmt: skip


def test_user_and_robot_credentials_pass_through(harbor, served, tmp_path):
    gateway, model = served
    for who, credentials in (("member", harbor.member), ("robot", harbor.puller),
                             ("admin", harbor.admin)):  # fmt: skip
        snapshot, single = _snapshot(gateway, "team/hfbert", _token(credentials), tmp_path / who)
        assert "path" in snapshot, (who, snapshot)
        assert tree_files(Path(snapshot["path"])) == tree_files(model), who
        assert Path(single["path"]).read_bytes() == (model / "config.json").read_bytes()
    refused = _snapshot(gateway, "team/hfbert", None, tmp_path / "anonymous")
    assert [r.get("status") for r in refused] == [401, 401], refused
    wrong = _snapshot(gateway, "team/hfbert", "alice:wrong", tmp_path / "wrong")
    assert [r.get("status") for r in wrong] == [401, 401], wrong
    public, _ = _snapshot(gateway, "open/hfopen", None, tmp_path / "public")
    assert tree_files(Path(public["path"])) == tree_files(model)
    # a member of team only: the second project's model is not there for them
    other = _snapshot(gateway, "other/hfsecret", _token(harbor.member), tmp_path / "other")
    assert [r.get("status") for r in other] == [401, 401], other


def test_discovery_lists_what_each_client_may_see(harbor, served, tmp_path):
    gateway, _ = served
    seen = {
        who: gateway.client(LIST_AS, None, tmp_path / f"hf-{who}", token)
        for who, token in (
            ("anonymous", None),
            ("member", _token(harbor.member)),
            ("robot", _token(harbor.puller)),
            ("admin", _token(harbor.admin)),
            ("wrong", "alice:wrong"),
        )
    }
    assert seen["wrong"] == {"status": 401}
    projects = {
        who: {i.split("/")[0] for i in s["all"]} for who, s in seen.items() if who != "wrong"
    }
    assert projects["anonymous"] == {harbor.public}, seen["anonymous"]
    assert projects["member"] == {harbor.private, harbor.public}, seen["member"]
    # A robot may not list a project's repositories through Harbor's API (403): it sees
    # what the gateway's own (here anonymous) listing names and its token can read.
    assert projects["robot"] == {harbor.public}, seen["robot"]
    assert {"team/hfbert", "other/hfsecret", "open/hfopen"} <= set(seen["admin"]["all"])
    assert {harbor.private, harbor.second, harbor.public} <= projects["admin"]
    assert seen["member"]["search"] == ["team/hfbert"]
    assert seen["anonymous"]["search"] == []
    page = requests.get(f"{gateway.url}/", headers=_basic(harbor.member), timeout=60)
    assert page.status_code == 200
    assert "team/hfbert" in page.text and "open/hfopen" in page.text
    assert "other/hfsecret" not in page.text and "does not let this gateway" not in page.text
    found = requests.get(f"{gateway.url}/?search=hfb", headers=_basic(harbor.admin), timeout=60)
    assert "team/hfbert" in found.text and "open/hfopen" not in found.text


def test_an_upload_lands_in_a_harbor_project(harbor, served, tmp_path):
    gateway, model = served
    out = gateway.client(UPLOAD, {"repo": "team/hfup", "folder": str(model), "create": True},
                         tmp_path / "up", _token(harbor.member))  # fmt: skip
    assert "ok" in out["create"] and "ok" in out["upload"], out
    artifact = harbor.artifact(harbor.private, "hfup", "main", with_tag="true")
    assert "main" in {t["name"] for t in artifact.get("tags") or []}
    (back,) = gateway.hf([["snapshot", "team/hfup", "main"]], tmp_path / "back",
                         _token(harbor.member))  # fmt: skip
    assert tree_files(Path(back["path"])) == tree_files(model)
    # ... and modelpack pulls the same files from Harbor itself
    env = {"MODELPACK_USERNAME": harbor.member[0], "MODELPACK_PASSWORD": harbor.member[1]}
    _ok(run_cli("pull", harbor.ref(harbor.private, "hfup", "main"), "-o", str(tmp_path / "p"),
                env=env))  # fmt: skip
    assert tree_files(tmp_path / "p") == tree_files(model)
    # A pull-only robot reads the repo and may not commit to it: Harbor's answer, passed on.
    refused = gateway.client(UPLOAD, {"repo": "team/hfup", "folder": str(model)},
                             tmp_path / "robot", _token(harbor.puller))  # fmt: skip
    assert refused["upload"].get("status") in (401, 403), refused
    after = harbor.artifact(harbor.private, "hfup", "main", with_tag="true")
    assert after["digest"] == artifact["digest"]  # the branch did not move


def _artifacts(harbor, project: str, name: str) -> set[tuple[str, tuple[str, ...]]]:  # noqa: ANN001
    """(digest, tags) of each artifact Harbor lists (its pull times change on their own)."""
    listed = harbor.server.api("GET", f"/projects/{project}/repositories/{name}/artifacts",
                               params={"with_tag": "true"}).json()  # fmt: skip
    return {(a["digest"], tuple(sorted(t["name"] for t in a.get("tags") or []))) for a in listed}


def test_an_immutable_branch_is_refused_as_a_hub_error(harbor, served, tmp_path):
    gateway, model = served
    project = "hflocked"
    harbor.server.create_project(project)
    harbor.server.add_member(project, harbor.member[0], "developer")
    token = _token(harbor.member)
    first = gateway.client(UPLOAD, {"repo": f"{project}/bert", "folder": str(model),
                                    "create": True}, tmp_path / "one", token)  # fmt: skip
    assert "ok" in first["upload"], first
    harbor.server.protect_tags(project, "main")  # the branch, from now on
    before = _artifacts(harbor, project, "bert")
    changed = make_tiny_model(tmp_path / "changed", seed=7)
    second = gateway.client(UPLOAD, {"repo": f"{project}/bert", "folder": str(changed)},
                            tmp_path / "two", token)  # fmt: skip
    refused = second["upload"]
    assert "error" in refused and 400 <= refused["status"] < 500, refused
    assert refused["status"] == 409 and "tag immutability rule" in refused["message"], refused
    assert harbor.host not in refused["message"]
    assert _artifacts(harbor, project, "bert") == before
