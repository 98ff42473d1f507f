"""Datasets on the gateway (issue 32): ``repo_type="dataset"`` through huggingface_hub and the
`datasets` library, as pip installs them, against a real registry.  A dataset is a ModelPack
artifact whose files are the spec's dataset layers (its README a doc layer), in the registry
repository ``NAMESPACE/datasets/ORG/NAME``: beside the models, never one of them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests
from support.datasets import ROWS, parquet_dataset
from support.gateway import CATCH, Gateway, hub_client

import modelpack

NAMESPACE = "hub"
UPLOAD = """
import json, sys
from huggingface_hub import HfApi
repo, folder = json.loads(sys.argv[1])
api = HfApi()
out = {"create": attempt(lambda: api.create_repo(repo, repo_type="dataset", exist_ok=True))}
out["create"] = {k: (str(v) if k == "ok" else v) for k, v in out["create"].items()}
out["upload"] = attempt(lambda: api.upload_folder(
    repo_id=repo, folder_path=folder, repo_type="dataset").oid)
print(json.dumps(out))
"""

READ = """
import json, sys
from huggingface_hub import HfApi, snapshot_download
repo, = json.loads(sys.argv[1])
api = HfApi()
info = api.dataset_info(repo, files_metadata=True)
print(json.dumps({
    "id": info.id, "sha": info.sha, "card": info.card_data.to_dict() if info.card_data else None,
    "files": sorted(s.rfilename for s in info.siblings),
    "listed": [d.id for d in api.list_datasets(search=repo.split("/")[1])],
    "models": [m.id for m in api.list_models()],
    "commits": [c.commit_id for c in api.list_repo_commits(repo, repo_type="dataset")],
    "snapshot": snapshot_download(repo, repo_type="dataset"),
}))
"""

LOAD = """
import json, sys
from datasets import load_dataset
repo, = json.loads(sys.argv[1])
data = load_dataset(repo, split="train")
print(json.dumps({"rows": data.to_list(), "columns": data.column_names}))
"""


def files_of(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".cache" not in p.parts
    }


@pytest.fixture
def gateway(registry, tmp_path):
    server = Gateway(f"{registry.host}/{NAMESPACE}", tmp_path / "gateway").start()
    yield server
    server.stop()


@pytest.mark.parametrize("path", ["xet", "lfs"])
def test_a_dataset_uploads_lists_downloads_and_loads(gateway, registry, tmp_path, path):
    """create_repo, upload_folder (through Xet, or LFS), dataset_info, list_datasets,
    snapshot_download and datasets.load_dataset, all with repo_type dataset; the registry
    holds a ModelPack artifact of dataset layers under NAMESPACE/datasets/."""
    source = parquet_dataset(tmp_path / "source")
    repo = f"org/sentences-{path}"
    env = {"HF_HUB_DISABLE_XET": "1"} if path == "lfs" else {}
    done = hub_client(gateway.url, CATCH + UPLOAD, [repo, str(source)], tmp_path / "up",
                      env_extra=env)  # fmt: skip
    assert done["create"]["ok"] == f"{gateway.url}/datasets/{repo}", done
    assert "ok" in done["upload"], done
    read = hub_client(gateway.url, READ, [repo], tmp_path / "down")
    assert read["id"] == repo
    assert read["card"]["license"] == "mit"
    assert read["files"] == sorted([".gitattributes", *files_of(source)])
    assert read["listed"] == [repo]
    assert repo not in read["models"] and f"datasets/{repo}" not in read["models"]
    assert read["sha"] == read["commits"][0] and len(read["commits"]) == 2  # create + upload
    snapshot = Path(read["snapshot"])
    assert "datasets--org--sentences" in str(snapshot)
    assert {k: v for k, v in files_of(snapshot).items() if k != ".gitattributes"} == files_of(
        source
    )
    loaded = hub_client(gateway.url, LOAD, [repo], tmp_path / "load")
    assert loaded["rows"] == ROWS and loaded["columns"] == ["text", "label"]

    manifest = requests.get(
        f"http://{registry.host}/v2/{NAMESPACE}/datasets/{repo}/manifests/main",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=30,
    ).json()  # fmt: skip
    kinds = {
        layer["annotations"]["org.cncf.model.filepath"]: layer["mediaType"]
        for layer in manifest["layers"]
    }
    assert kinds["README.md"] == "application/vnd.cncf.model.doc.v1.raw"
    for name in files_of(source):
        if name.endswith(".parquet"):
            assert kinds[name] == "application/vnd.cncf.model.dataset.v1.raw", kinds

    # A node pulls it into the HF cache where huggingface_hub looks for a dataset.
    cache = tmp_path / "hf-cache"
    modelpack.pull(f"{registry.host}/{NAMESPACE}/datasets/{repo}:main", hf_cache=cache,
                   hf_trust_annotations=True, home=tmp_path / "node", plain_http=True)  # fmt: skip
    (pulled,) = (cache / f"datasets--org--sentences-{path}" / "snapshots").iterdir()
    assert pulled.name == read["sha"]
    assert {k: v for k, v in files_of(pulled).items() if k != ".gitattributes"} == files_of(source)


CLASH = """
import json, sys
from huggingface_hub import HfApi, hf_hub_download
repo, = json.loads(sys.argv[1])
api = HfApi()
out = {}
for kind in ("model", "dataset"):
    api.create_repo(repo, repo_type=kind, exist_ok=True)
    api.upload_file(path_or_fileobj=kind.encode(), path_in_repo="kind.txt", repo_id=repo,
                    repo_type=kind)
for kind in ("model", "dataset"):
    out[kind] = open(hf_hub_download(repo, "kind.txt", repo_type=kind)).read()
out["reserved"] = attempt(lambda: api.create_repo("datasets/x"))
out["no-org"] = attempt(lambda: api.create_repo("solo", repo_type="dataset"))
out["dataset-branch"] = attempt(lambda: api.create_branch(repo, branch="dev", repo_type="dataset"))
out["refs"] = {k: sorted(b.name for b in api.list_repo_refs(repo, repo_type=k).branches)
               for k in ("model", "dataset")}
print(json.dumps(out))
"""


def test_a_model_and_a_dataset_of_one_name_are_two_repos(gateway, tmp_path):
    """org/same as a model and as a dataset: two registry repositories, each with its own
    files and branches; no model URL reaches a dataset and no model's org is ``datasets``."""
    out = hub_client(gateway.url, CATCH + CLASH, ["org/same"], tmp_path / "home")
    assert out["model"] == "model" and out["dataset"] == "dataset"
    assert out["reserved"]["status"] == 400, out
    assert out["no-org"]["status"] == 400 and "ORG/NAME" in out["no-org"]["message"], out
    assert "ok" in out["dataset-branch"], out
    assert out["refs"] == {"model": ["main"], "dataset": ["dev", "main"]}
    answer = requests.get(f"{gateway.url}/api/models/datasets/org/same", timeout=30)
    assert answer.status_code == 404 and answer.headers["X-Error-Code"] == "RepoNotFound"
    answer = requests.get(f"{gateway.url}/api/datasets/org/same/tree/main", timeout=30)
    assert {e["path"] for e in answer.json()} == {".gitattributes", "kind.txt"}
    for other in ("spaces", "kernels"):
        answer = requests.get(f"{gateway.url}/api/{other}/org/same", timeout=30)
        assert answer.status_code == 404 and other in answer.headers["X-Error-Message"]


def test_the_dataset_page_and_the_datasets_listing(gateway, tmp_path):
    source = parquet_dataset(tmp_path / "source")
    done = hub_client(gateway.url, CATCH + UPLOAD, ["org/paged", str(source)], tmp_path / "up")
    assert "ok" in done["upload"], done
    page = requests.get(f"{gateway.url}/datasets/org/paged", timeout=30)
    assert page.status_code == 200, page.text
    assert "org/paged" in page.text and "train-00000-of-00002.parquet" in page.text
    assert 'repo_type="dataset"' in page.text.replace("&quot;", '"')
    assert "/datasets/org/paged/resolve/" in page.text
    listing = requests.get(f"{gateway.url}/datasets", timeout=30)
    assert listing.status_code == 200 and 'href="/datasets/org/paged"' in listing.text
    models = requests.get(f"{gateway.url}/", timeout=30)
    assert models.status_code == 200 and "org/paged" not in models.text
    upper = requests.get(f"{gateway.url}/datasets/Org/Paged", timeout=30, allow_redirects=False)
    assert upper.status_code == 307 and upper.headers["Location"] == "/datasets/org/paged"


def test_no_model_url_reaches_a_dataset(gateway, registry, tmp_path):
    """A repo's segments are taken one by one: ``datasets%2Forg`` in a model URL is one
    segment with a slash in it, not the dataset org/NAME (it read and committed to the
    dataset), and ``Datasets`` as a model's org is refused before lower-casing makes it
    ``datasets`` (create_repo made the dataset, or the registry repository
    NAMESPACE/datasets all datasets are under)."""
    out = hub_client(gateway.url, CATCH + UPLOAD, ["org/target", str(parquet_dataset(
        tmp_path / "source"))], tmp_path / "up")  # fmt: skip
    assert "ok" in out["upload"], out
    before = requests.get(f"{gateway.url}/api/datasets/org/target", timeout=30).json()["sha"]
    ndjson = {"Content-Type": "application/x-ndjson"}
    commit = (b'{"key":"header","value":{"summary":"x"}}\n'
              b'{"key":"file","value":{"path":"x.txt","content":"aGk=","encoding":"base64"}}\n')  # fmt: skip
    lfs = {"Content-Type": "application/vnd.git-lfs+json"}
    json_type = {"Content-Type": "application/json"}
    batch = b'{"operation":"upload","objects":[{"oid":"' + b"a" * 64 + b'","size":2}]}'
    for method, path, body, headers in [
        ("GET", "/api/models/datasets%2Forg/target", None, {}),
        ("GET", "/api/models/datasets%2Forg%2Ftarget", None, {}),
        ("GET", "/api/models/datasets%2Forg/target/tree/main", None, {}),
        ("GET", "/api/models/datasets%2Forg/target/refs", None, {}),
        ("GET", "/datasets%2Forg/target/resolve/main/README.md", None, {}),
        ("GET", "/api/datasets/org%2Ftarget", None, {}),
        ("POST", "/api/models/datasets%2Forg/target/commit/main", commit, ndjson),
        ("POST", "/api/models/datasets%2Forg/target/preupload/main", b'{"files":[]}', json_type),
        ("POST", "/datasets%2Forg/target.git/info/lfs/objects/batch", batch, lfs),
        ("POST", "/org%2Ftarget.git/info/lfs/objects/batch", batch, lfs),
    ]:
        answer = requests.request(method, gateway.url + path, data=body, headers=headers,
                                  timeout=30, allow_redirects=False)  # fmt: skip
        assert answer.status_code == 404, (path, answer.status_code, answer.text[:200])
        assert answer.headers.get("X-Error-Code") == "RepoNotFound", path
    page = requests.get(f"{gateway.url}/datasets%2Forg/target", timeout=30, allow_redirects=False)
    assert page.status_code == 404, page.status_code
    after = requests.get(f"{gateway.url}/api/datasets/org/target", timeout=30).json()["sha"]
    assert after == before

    created = requests.post(f"{gateway.url}/api/repos/create", json={"name": "target",
                            "organization": "Datasets"}, timeout=30)  # fmt: skip
    assert created.status_code == 400, created.text
    for name, org in [("fresh", "Datasets"), ("Datasets", None), ("DATASETS", None)]:
        answer = requests.post(f"{gateway.url}/api/repos/create",
                               json={"name": name, "organization": org}, timeout=30)  # fmt: skip
        assert answer.status_code == 400, (name, org, answer.text)
    answer = requests.post(f"{gateway.url}/api/repos/create",
                           json={"name": "Datasets/x", "type": "dataset"}, timeout=30)  # fmt: skip
    assert answer.status_code == 400, answer.text
    catalog = requests.get(f"http://{registry.host}/v2/_catalog", timeout=30).json()
    ours = {r for r in catalog["repositories"] if r.startswith(f"{NAMESPACE}/")}
    assert f"{NAMESPACE}/datasets" not in ours and f"{NAMESPACE}/datasets/fresh" not in ours
    assert f"{NAMESPACE}/datasets/datasets/x" not in ours
    upper = requests.get(f"{gateway.url}/Datasets/target/resolve/main/README.md", timeout=30,
                         allow_redirects=False)  # fmt: skip
    assert upper.status_code == 404, upper.headers.get("Location")
