"""Xet downloads from `modelpack serve` (issue 32 part 3): files uploaded through Xet are
downloaded by huggingface_hub with hf_xet through the read token, reconstructions and
signed xorb ranges (read/xet.py); files uploaded through LFS stay plain HTTP; every read
route's refusals and bounds."""

import hashlib
import hmac
import io
import random
import re
import time
from pathlib import Path

import pytest
import requests
from support.gateway import Gateway

from modelpack.gateway.core.xetformat import index_xorb, read_chunks

NAMESPACE = "xetread"
READ = "/api/modelpack/xet-read"

UPLOAD = """
import io, json, sys
from huggingface_hub import CommitOperationAdd, HfApi
args = json.loads(sys.argv[1])
api = HfApi()
api.create_repo(args["repo"], exist_ok=True)
api.upload_folder(repo_id=args["repo"], folder_path=args["folder"])  # by path: Xet
# A file object opened in binary mode takes the LFS path even with hf_xet.
info = api.create_commit(args["repo"], [CommitOperationAdd("lfs.bin", io.BytesIO(args["lfs"].encode() * 4096))],
                         commit_message="lfs")
print(json.dumps(info.oid))
"""

DOWNLOAD = """
import json, sys
from huggingface_hub import snapshot_download
print(json.dumps(snapshot_download(json.loads(sys.argv[1]))))
"""


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".cache" not in p.parts and p.name != ".gitattributes"
    }


@pytest.fixture(scope="module")
def uploaded(registry, tmp_path_factory):
    """A gateway and a repo of two Xet files (random and text), a small inline file and
    an LFS one; the gateway stays up for the module."""
    work = tmp_path_factory.mktemp("xetread")
    gateway = Gateway(f"{registry.host}/{NAMESPACE}", work / "gateway",
                      env={"MODELPACK_GATEWAY_INLINE_MAX": "200"}).start()  # fmt: skip
    folder = work / "model"
    folder.mkdir()
    (folder / "random.bin").write_bytes(random.Random(7).randbytes(5 * 1024 * 1024 + 11))
    (folder / "text.txt").write_bytes(b"".join(b"row %d\n" % i for i in range(300_000)))
    (folder / "config.json").write_text('{"a": 1}')
    expected = files_of(folder)
    expected["lfs.bin"] = b"L" * 4096
    gateway.client(UPLOAD, {"repo": "org/dl", "folder": str(folder), "lfs": "L"}, work / "up")
    yield gateway, expected, work
    gateway.stop()


def read_token(gateway: Gateway, repo: str = "org/dl", revision: str = "main") -> dict:
    answer = requests.get(f"{gateway.url}/api/models/{repo}/xet-read-token/{revision}", timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def xet_hash(gateway: Gateway, path: str) -> str | None:
    head = requests.head(f"{gateway.url}/org/dl/resolve/main/{path}", timeout=30)
    assert head.status_code == 200
    return head.headers.get("X-Xet-Hash")


def test_xet_files_download_through_xet_and_lfs_files_over_http(uploaded):
    gateway, expected, work = uploaded
    before = gateway.metrics()
    snapshot = Path(gateway.client(DOWNLOAD, "org/dl", work / "down"))
    assert files_of(snapshot) == expected
    after = gateway.metrics()
    # resolve's HEAD: the Xet hash and the read token's Link for Xet files only.
    head = requests.head(f"{gateway.url}/org/dl/resolve/main/random.bin", timeout=30)
    assert re.fullmatch(r"[0-9a-f]{64}", head.headers["X-Xet-Hash"])
    assert re.search(r"/api/models/org/dl/xet-read-token/[0-9a-f]{40}>; rel=\"xet-auth\"",
                     head.headers["Link"])  # fmt: skip
    assert xet_hash(gateway, "lfs.bin") is None and xet_hash(gateway, "config.json") is None
    tree = requests.get(f"{gateway.url}/api/models/org/dl/tree/main", timeout=30).json()
    hashes = {entry["path"]: entry.get("xetHash") for entry in tree}
    assert hashes["random.bin"] == head.headers["X-Xet-Hash"] and hashes["text.txt"]
    assert hashes["lfs.bin"] is None and hashes["config.json"] is None
    answered = gateway.answered(r"(GET|HEAD) \S+")
    assert any(re.fullmatch(r"GET /api/models/org/dl/xet-read-token/\S+", a) for a in answered)
    reconstructions = [a for a in answered if f"{READ}/v1/reconstructions/" in a]
    assert {a.rsplit("/", 1)[1] for a in reconstructions} == {hashes["random.bin"],
                                                               hashes["text.txt"]}  # fmt: skip
    assert not any(re.fullmatch(r"GET /org/dl/resolve/\S+/(random\.bin|text\.txt)", a)
                   for a in answered)  # fmt: skip
    assert any(re.fullmatch(r"GET /org/dl/resolve/\S+/lfs\.bin", a) for a in answered)
    sent = after['modelpack_gateway_served_bytes_total{source="xet"}'] - before.get(
        'modelpack_gateway_served_bytes_total{source="xet"}', 0
    )
    # Random bytes do not compress; the text does: less than the files, more than nothing.
    assert 5 * 1024 * 1024 < sent < len(expected["random.bin"]) + len(expected["text.txt"])


def test_plain_http_when_the_client_disables_xet(uploaded):
    gateway, expected, work = uploaded
    snapshot = gateway.client(DOWNLOAD, "org/dl", work / "plain",
                              env_extra={"HF_HUB_DISABLE_XET": "1"})  # fmt: skip
    assert files_of(Path(snapshot)) == expected
    log = gateway.wait_for_log(r"GET /org/dl/resolve/\S+/random\.bin 200")
    assert re.search(r"GET /org/dl/resolve/\S+/text\.txt 200", log)


def reconstruct(gateway: Gateway, token: dict, file_hash: str, first: int, last: int) -> bytes:
    """Bytes first..last of a file as hf_xet puts them together from the answer."""
    auth = {"Authorization": f"Bearer {token['accessToken']}", "Range": f"bytes={first}-{last}"}
    answer = requests.get(f"{token['casUrl']}/v1/reconstructions/{file_hash}", headers=auth,
                          timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    document = answer.json()
    out = b""
    for term in document["terms"]:
        fetch = next(f for f in document["fetch_info"][term["hash"]]
                     if f["range"]["start"] <= term["range"]["start"]
                     and term["range"]["end"] <= f["range"]["end"])  # fmt: skip
        span = f"bytes={fetch['url_range']['start']}-{fetch['url_range']['end']}"
        got = requests.get(fetch["url"], headers={"Range": span}, timeout=30)  # no token
        assert got.status_code == 206, got.text
        stream = io.BytesIO(got.content)
        index = index_xorb(stream)
        skip = term["range"]["start"] - fetch["range"]["start"]
        data = b"".join(read_chunks(stream, index, skip, skip + term["range"]["end"]
                                    - term["range"]["start"]))  # fmt: skip
        assert len(data) == term["unpacked_length"]
        out += data
    out = out[document["offset_into_first_range"] :]
    return out[: last - first + 1]


def test_a_reconstruction_covers_the_range_asked_in_whole_chunks(uploaded):
    gateway, expected, _ = uploaded
    token = read_token(gateway)
    data = expected["random.bin"]
    file_hash = xet_hash(gateway, "random.bin")
    for first, last in [(0, len(data) - 1), (1_000_003, 3_500_017), (len(data) - 5, len(data) - 1)]:
        assert reconstruct(gateway, token, file_hash, first, last) == data[first : last + 1]
    # A range in the middle is answered with the chunks it needs, not the whole file.
    auth = {"Authorization": f"Bearer {token['accessToken']}", "Range": "bytes=2000000-2000009"}
    answer = requests.get(f"{token['casUrl']}/v1/reconstructions/{file_hash}", headers=auth,
                          timeout=30).json()  # fmt: skip
    assert sum(t["unpacked_length"] for t in answer["terms"]) <= 2 * 128 * 1024
    # Past the end: 416, which hf_xet reads as the end of the file.
    auth["Range"] = f"bytes={len(data)}-{len(data) + 10}"
    answer = requests.get(f"{token['casUrl']}/v1/reconstructions/{file_hash}", headers=auth,
                          timeout=30)  # fmt: skip
    assert answer.status_code == 416


def test_read_routes_refuse_what_they_must(uploaded, registry):
    gateway, expected, work = uploaded
    token = read_token(gateway)
    cas, bearer = token["casUrl"], {"Authorization": f"Bearer {token['accessToken']}"}
    file_hash = xet_hash(gateway, "random.bin")
    url = f"{cas}/v1/reconstructions/{file_hash}"
    # No token, a wrong one, a write token: 401.
    assert requests.get(url, timeout=30).status_code == 401
    assert (
        requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=30).status_code == 401
    )
    write = requests.get(f"{gateway.url}/api/models/org/dl/xet-write-token/main", timeout=30)
    assert write.status_code == 200
    wrong = {"Authorization": f"Bearer {write.json()['accessToken']}"}
    assert requests.get(url, headers=wrong, timeout=30).status_code == 401
    # A read token does not upload.
    shard = requests.post(f"{gateway.url}/api/modelpack/xet/v1/shards", headers=bearer,
                          data=b"x", timeout=30)  # fmt: skip
    assert shard.status_code == 401
    # Unknown hash, malformed hash: 404; v2: 501 (hf_xet then asks v1).
    assert requests.get(f"{cas}/v1/reconstructions/{'0' * 64}", headers=bearer,
                        timeout=30).status_code == 404  # fmt: skip
    assert requests.get(f"{cas}/v1/reconstructions/xyz", headers=bearer,
                        timeout=30).status_code == 404  # fmt: skip
    assert requests.get(f"{cas}/v2/reconstructions/{file_hash}", headers=bearer,
                        timeout=30).status_code == 501  # fmt: skip
    assert requests.post(url, headers=bearer, timeout=30).status_code == 405
    # A token of another repository that lacks the file: the same 404 as an unknown hash.
    other = work / "other"
    other.mkdir()
    (other / "x.bin").write_bytes(random.Random(1).randbytes(4096))
    gateway.client(UPLOAD, {"repo": "org/other", "folder": str(other), "lfs": "M"}, work / "o")
    foreign = read_token(gateway, "org/other")
    refused = requests.get(url, timeout=30,
                           headers={"Authorization": f"Bearer {foreign['accessToken']}"})  # fmt: skip
    assert refused.status_code == 404
    assert refused.headers["X-Error-Message"] == requests.get(
        f"{cas}/v1/reconstructions/{'0' * 64}", headers=bearer, timeout=30
    ).headers["X-Error-Message"].replace("0" * 64, file_hash)
    # Fetch URLs: signed, inside their range, one range, not expired, at most a xorb.
    answer = requests.get(url, headers=bearer, timeout=30).json()
    fetch = next(iter(answer["fetch_info"].values()))[0]
    first, last = fetch["url_range"]["start"], fetch["url_range"]["end"]
    inside = {"Range": f"bytes={first}-{min(last, first + 99)}"}
    assert requests.get(fetch["url"], headers=inside, timeout=30).status_code == 206
    # HEAD: GET's headers, the length of the range included (no body).
    head = requests.head(fetch["url"], headers=inside, timeout=30)
    assert head.status_code == 206 and head.headers["Content-Length"] == str(
        min(100, last - first + 1)
    )
    assert head.headers["Content-Range"].startswith(f"bytes {first}-") and not head.content
    tampered = re.sub(r"r=\d+-", f"r={first + 1}-", fetch["url"])
    assert requests.get(tampered, headers=inside, timeout=30).status_code == 403
    assert requests.get(fetch["url"] + "0", headers=inside, timeout=30).status_code == 403
    for span in (f"bytes={first}-{last + 1}", f"bytes={first}-{first + 1},{first + 5}-{first + 6}",
                 "bytes=5-", "lines=1-2"):  # fmt: skip
        got = requests.get(fetch["url"], headers={"Range": span}, timeout=30)
        assert got.status_code == 416, span
    key = (gateway.cache / "xet" / "fetch.key").read_bytes()
    xorb = fetch["url"].split("/v1/fetch/")[1].split("?")[0]

    def signed(a: int, b: int, expires: int) -> str:
        mac = hmac.new(key, f"{xorb}:{a}:{b}:{expires}".encode(), hashlib.sha256).hexdigest()
        return f"{cas}/v1/fetch/{xorb}?r={a}-{b}&e={expires}&s={mac}"

    assert requests.get(signed(first, last, int(time.time()) + 60), timeout=30).status_code == 206
    assert requests.get(signed(first, last, int(time.time()) - 1), timeout=30).status_code == 403
    too_long = signed(0, 80 * 1024 * 1024, int(time.time()) + 60)
    assert requests.get(too_long, timeout=30).status_code == 403
    # A read token needs read rights: a repository that does not exist is a 404.
    missing = requests.get(f"{gateway.url}/api/models/org/none/xet-read-token/main", timeout=30)
    assert missing.status_code == 404
    assert requests.post(f"{gateway.url}/api/models/org/dl/xet-read-token/main",
                         timeout=30).status_code == 405  # fmt: skip


def test_one_gateway_keeps_its_records_in_the_node_cache(uploaded):
    """Without --redis the records are files of the node cache (they outlive a restart): a
    new reader over the same cache offers the same Xet hash; an LFS file has none."""
    from modelpack.gateway.read.xet import XetReads
    from modelpack.gateway.state.shared import InProcess

    gateway, expected, _ = uploaded

    class Config:
        settings = type("S", (), {"home": gateway.cache})()

    reads = XetReads(Config(), None, InProcess(gateway.cache / "xet"))  # type: ignore[arg-type]
    random_sha = hashlib.sha256(expected["random.bin"]).hexdigest()
    assert reads.file_hash(random_sha, len(expected["random.bin"]), "org/dl") == xet_hash(
        gateway, "random.bin"
    )
    records = gateway.cache / "xet" / "files"
    assert (records / random_sha).is_file()
    assert not (records / hashlib.sha256(expected["lfs.bin"]).hexdigest()).exists()
    assert reads.file_hash(random_sha, len(expected["random.bin"]) + 1, "org/dl") is None


DATASET_UPLOAD = """
import json, sys
from huggingface_hub import HfApi
args = json.loads(sys.argv[1])
api = HfApi()
api.create_repo(args["repo"], repo_type="dataset", exist_ok=True)
api.upload_folder(repo_id=args["repo"], repo_type="dataset", folder_path=args["folder"])
print(json.dumps(1))
"""

DATASET_FILE = """
import json, sys
from huggingface_hub import hf_hub_download
args = json.loads(sys.argv[1])
print(json.dumps(hf_hub_download(args["repo"], args["path"], repo_type="dataset")))
"""


def test_a_dataset_file_downloads_through_xet_by_resolve_s_link(uploaded):
    """hf_hub_download takes the read token's URL from resolve's Link: a dataset's is
    /api/datasets/ORG/NAME/xet-read-token/COMMIT (/api/models/datasets/... is a 404)."""
    gateway, _, work = uploaded
    folder = work / "dataset"
    folder.mkdir()
    data = random.Random(11).randbytes(300_000)
    (folder / "rows.bin").write_bytes(data)
    gateway.client(DATASET_UPLOAD, {"repo": "org/ds", "folder": str(folder)}, work / "ds-up")
    head = requests.head(f"{gateway.url}/datasets/org/ds/resolve/main/rows.bin", timeout=30)
    link = re.search(r"<([^>]+)>; rel=\"xet-auth\"", head.headers["Link"]).group(1)
    assert re.search(r"/api/datasets/org/ds/xet-read-token/[0-9a-f]{40}\Z", link), link
    assert requests.get(link, timeout=30).status_code == 200
    path = gateway.client(DATASET_FILE, {"repo": "org/ds", "path": "rows.bin"}, work / "ds-dl")
    assert Path(path).read_bytes() == data
    answered = gateway.answered(r"GET \S+")
    assert f"GET {READ}/v1/reconstructions/{head.headers['X-Xet-Hash']}" in answered


def test_one_read_token_per_credentials_and_revision(uploaded):
    """hf_xet asks a token per file: the same credentials and revision get the same one (the
    table of tokens does not fill up), other credentials another."""
    gateway, _, _ = uploaded
    first, again = read_token(gateway), read_token(gateway)
    assert first["accessToken"] == again["accessToken"] and first["exp"] == again["exp"]
    other = requests.get(f"{gateway.url}/api/models/org/dl/xet-read-token/main", timeout=30,
                         headers={"Authorization": "Bearer someone-else"})  # fmt: skip
    assert other.status_code == 200 and other.json()["accessToken"] != first["accessToken"]
