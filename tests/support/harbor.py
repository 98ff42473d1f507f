"""A real Harbor per version for the tests, set up as a team has it.

``scripts/peers/build-harbor.sh`` builds core, jobservice and registryctl from the source
snapshots in ``../shared/peer-src`` (once; a fixture waits for a running build on its lock),
and ``modelpack.testing.harbor`` starts them with Debian's PostgreSQL, Redis and
distribution.  Each Harbor gets: a private project with a member and two robot accounts
(pull+push, pull only), a second private project, and a public one.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from modelpack.testing.harbor import HarborServer

ROOT = Path(__file__).resolve().parents[2]
# MODELPACK_PEER_SRC as build-harbor.sh reads it, else the checkout's ../shared/peer-src
PEER_SRC = Path(os.environ.get("MODELPACK_PEER_SRC") or ROOT.parent / "shared" / "peer-src")
SCRIPT = ROOT / "scripts" / "peers" / "build-harbor.sh"
# The ModelPack names each version's model processor reads (its source, and our tests).
RENDERS = {"v2.15.2": "cnai", "main": "cncf"}
MEMBER_PASSWORD = "Member-pass1"


def build_harbor(version: str) -> None:
    """Build ``version`` if the cache lacks it (waits for a build already running)."""
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "MODELPACK_HARBOR_VERSIONS": version},
        capture_output=True,
        text=True,
        timeout=3 * 3600,
    )
    assert result.returncode == 0, f"build-harbor.sh {version}: {result.stdout}{result.stderr}"


@dataclass
class HarborTeam:
    """One running Harbor and the accounts the tests act as."""

    server: HarborServer
    member: tuple[str, str]  # a project member (developer) of ``private``
    pusher: tuple[str, str]  # robot$private+ci: pull and push
    puller: tuple[str, str]  # robot$private+reader: pull only
    private: str = "team"
    second: str = "other"
    public: str = "open"

    @property
    def version(self) -> str:
        return self.server.version

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def admin(self) -> tuple[str, str]:
        return ("admin", self.server.admin_password)

    @property
    def renders(self) -> str:
        """``cnai`` or ``cncf``: the names this version shows as a model."""
        return RENDERS[self.version]

    def ref(self, project: str, name: str, tag: str = "v1") -> str:
        return f"{self.host}/{project}/{name}:{tag}"

    def artifact(self, project: str, name: str, reference: str, **params: str) -> dict:
        """Harbor's own view of an artifact (``GET .../artifacts/REF``)."""
        return self.server.api(
            "GET", f"/projects/{project}/repositories/{name}/artifacts/{reference}", params=params
        ).json()

    def addition(self, project: str, name: str, reference: str, kind: str):  # noqa: ANN201
        """``.../artifacts/REF/additions/KIND`` (readme.md, license, files): the response."""
        return self.server.api(
            "GET",
            f"/projects/{project}/repositories/{name}/artifacts/{reference}/additions/{kind}",
            expect=(200, 400, 404),
        )


def start_team(version: str) -> HarborTeam:
    server = HarborServer(version=version).start()
    try:
        server.create_project("team")
        server.create_project("other")
        server.create_project("open", public=True)
        server.create_user("alice", MEMBER_PASSWORD)
        server.add_member("team", "alice", "developer")
        pusher = server.create_robot("team", "ci", ("pull", "push"))
        puller = server.create_robot("team", "reader", ("pull",))
    except BaseException:
        server.cleanup()
        raise
    return HarborTeam(server, ("alice", MEMBER_PASSWORD), pusher, puller)
