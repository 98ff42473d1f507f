"""Debian's `git` and `git-lfs` as a user runs them against a hub: a home of their own with
git-lfs installed in it, no terminal prompt, and one committer."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def git_env(home: Path) -> dict[str, str]:
    """An environment for `git` with git-lfs installed in ``home`` (made here), asking no
    terminal for credentials, ignoring the system's config, committing as Ada."""
    home.mkdir(parents=True)
    env = {
        "HOME": str(home), "PATH": os.environ["PATH"], "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.com",
    }  # fmt: skip
    git(env, None, "lfs", "install", "--skip-repo")
    git(env, None, "config", "--global", "init.defaultBranch", "main")
    return env


def git(env: dict[str, str], cwd: Path | None, *args: str, check: bool = True) -> str:
    """`git ARGS` in ``cwd``: its output; with ``check`` it must succeed and the answer is
    its stdout, without it the answer is stdout and stderr together."""
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    if check:
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout + done.stderr if not check else done.stdout
