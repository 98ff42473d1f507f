"""Git over HTTP (clone, fetch, pull, push, git-lfs) for the hub's repos: built on the read
and write sides, below the app's routing."""
