"""The gateway's rules for hub paths, ids and error headers, and its spool sweep
(issue 28, defects 1, 8 and 11); the HTTP side is tests/integration/test_hub_upload_safety.py."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelpack.gateway.core.hub import COMMIT_RE, HubError, valid_file_path, valid_repo_id
from modelpack.gateway.writes.uploads import OID_RE
from modelpack.gateway.writes.xet import HASH_RE

# gunicorn's own test of a header value (gunicorn/http/wsgi.py): anything else is a 500.
GUNICORN_HEADER_VALUE = re.compile(r"[ \t\x21-\x7e\x80-\xff]*")

REFUSED = [
    "", "/etc/passwd", "/abs.json", "../x", "a/../../x", "a/..", "./a", "a/./b", "a//b",
    "a/", ".git/config", "sub/.git/hooks/pre-commit", ".GIT/config", ".git./config",
    ".git /config", "GIT~1/config", ".g\u200cit/config", ".cache/huggingface/x",
    "a\nb", "a\rb", "a\tb", "a\x00b", "a\x1bb", "a\x7fb", "a\x85b", "x" * 256,
    "d/" * 600 + "f", "\udcff", "a\\b", ".blobs/x",
]  # fmt: skip
ACCEPTED = [
    "config.json", "a/b/c.safetensors", "naïve café.txt", "a.git/x", ".github/ci.yml",
    ".gitattributes", ".gitignore", "x" * 255, "d/" * 500 + "f", "日本語/模型.bin",
]  # fmt: skip


@pytest.mark.parametrize("path", REFUSED, ids=ascii)
def test_paths_no_repo_may_hold_are_refused(path):
    assert not valid_file_path(path)


@pytest.mark.parametrize("path", ACCEPTED, ids=lambda p: ascii(p)[:40])
def test_paths_the_hub_takes_are_accepted(path):
    assert valid_file_path(path)


@pytest.mark.parametrize("text", ["a\x00b", "a\r\nX-Evil: 1", "a\x01\x7f\x85b", "a\u2028b", "ü€"])
def test_hub_error_headers_are_one_printable_line(text):
    error = HubError(404, f"Entry not found: {text}", "EntryNotFound", {"X-Extra": text})
    for value in error.response_headers().values():
        assert GUNICORN_HEADER_VALUE.fullmatch(value), ascii(value)
        assert "\n" not in value and "\r" not in value


def test_ids_and_hashes_do_not_end_in_a_newline():
    assert valid_repo_id("org/name") and not valid_repo_id("org/name\n")
    assert not valid_repo_id("name\n") and not valid_repo_id("org\n/name")
    for pattern, good in [(COMMIT_RE, "a" * 40), (OID_RE, "b" * 64), (HASH_RE, "c" * 64)]:
        assert pattern.match(good) and not pattern.match(good + "\n")


# -- the staging folder --------------------------------------------------------------------


def test_staging_never_follows_a_link_or_reuses_a_file(tmp_path, monkeypatch):
    """Paths are checked before staging; the staging itself is the proof: a link that
    appeared in the folder is found by resolving the path, and if it appears after
    that, opening with O_NOFOLLOW refuses it."""
    from modelpack.gateway.writes.commits import CommitPathError, _create_beneath

    stage, outside = tmp_path / "stage", tmp_path / "outside"
    stage.mkdir()
    outside.mkdir()
    with _create_beneath(stage, "a/b/c.json") as out:
        out.write(b"{}")
    assert (stage / "a/b/c.json").read_bytes() == b"{}"
    with pytest.raises(FileExistsError), _create_beneath(stage, "a/b/c.json"):
        pass
    (stage / "link").symlink_to(outside)
    (stage / "file-link").symlink_to(outside / "victim")
    for path in ("link/x.json", "file-link"):
        with pytest.raises(CommitPathError, match="leaves"), _create_beneath(stage, path):
            pass
        with monkeypatch.context() as m:  # the link planted after the check
            m.setattr(Path, "resolve", lambda self, strict=False: self)
            with pytest.raises(OSError), _create_beneath(stage, path):
                pass
    assert not list(outside.iterdir())


# -- the spool sweep -----------------------------------------------------------------------

CLAIM_AND_WAIT = """
import sys, time
from pathlib import Path
from modelpack.gateway.state.spools import claimed_folder
with claimed_folder(Path(sys.argv[1]), "commit-") as folder:
    (folder / "spool").write_bytes(b"x" * 1000)
    print(folder, flush=True)
    time.sleep(600)
"""


def test_the_sweep_removes_what_no_live_process_holds(tmp_path):
    from modelpack.gateway.state.spools import claimed_folder, sweep

    uploads = tmp_path / "uploads"
    child = subprocess.Popen(
        [sys.executable, "-c", CLAIM_AND_WAIT, str(uploads)], stdout=subprocess.PIPE, text=True
    )
    try:
        killed = Path(child.stdout.readline().strip())
        with claimed_folder(uploads, "commit-") as live:
            assert sweep(uploads) == []  # both held: the child's and ours
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            assert sweep(uploads) == [killed.name]  # its flock died with it
            assert live.is_dir() and not killed.exists()
        assert not live.exists()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # Entries nobody claims (other modules' spools) go once older than max_age.
    old, young = uploads / "file-old", uploads / "file-young"
    old.write_bytes(b"o")
    young.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert sweep(uploads, max_age=3600) == ["file-old"]
    assert young.exists() and sorted(os.listdir(uploads)) == ["file-young"]


def test_xet_and_import_work_left_by_a_killed_worker_is_swept_at_start(tmp_path):
    """Issue 28, 11: nothing cleaned ``xet/spool`` or ``upstream/import-*``; both now work in
    claimed folders (state/spools.py) that the next gateway sweeps when it starts."""
    from modelpack.gateway import GatewayConfig, make_app
    from modelpack.settings import Settings

    home = tmp_path / "home"
    left = [home / "xet" / "spool" / "file-killed", home / "upstream" / "work" / "import-killed"]
    for folder in left:
        folder.mkdir(parents=True)
        (folder / "partial").write_bytes(b"x" * 1000)
        Path(f"{folder}.lock").write_bytes(b"")  # its holder died: the flock is free
    config = GatewayConfig(
        "127.0.0.1:9/gw",
        settings=Settings(home=home, plain_http=True),
        upstream="http://127.0.0.1:9",
        upstream_allow=("org/*",),
    )
    make_app(config)
    assert [f for f in left if f.exists()] == []


def test_no_spelling_of_datasets_makes_a_model_id_a_dataset_id():
    """Repo ids are lower-cased after this check (canonical_repo_id): a model's org or
    one-segment name ``Datasets`` would become ``datasets`` (a dataset, or the registry
    repository all datasets are under), so the reserved name is refused in any case.  A
    model's NAME ``datasets`` (``org/datasets``) reaches no dataset and stays a model."""
    for refused in ("Datasets/x", "DATASETS/x", "Datasets", "datasets", "datasets/Datasets/x",
                    "datasets/DataSets", "datasets/datasets/x"):  # fmt: skip
        assert not valid_repo_id(refused), refused
    for accepted in ("org/datasets", "datasets/org/datasets", "datasets/x", "datasets/org/x"):
        assert valid_repo_id(accepted), accepted


def test_a_hub_url_of_a_dataset_maps_to_its_dataset_cache_folder():
    """A config's source URL ``https://huggingface.co/datasets/ORG/NAME`` names dataset
    ORG/NAME (``datasets--ORG--NAME``), not dataset ORG (``datasets--ORG``)."""
    from modelpack.storage.hfcache import _HF_URL_RE, HFMapping

    for url, repo in [
        ("https://huggingface.co/datasets/team/reviews", "datasets/team/reviews"),
        ("https://huggingface.co/datasets/team/reviews/tree/main", "datasets/team/reviews"),
        ("https://huggingface.co/datasets/squad", "datasets/squad"),
        ("https://huggingface.co/org/model", "org/model"),
    ]:
        match = _HF_URL_RE.match(url)
        assert match and match.group(1) == repo, url
    assert HFMapping("datasets/team/reviews", "a" * 40, ("main",)).folder == (
        "datasets--team--reviews"
    )
