"""The hub's write API, pushed to the registry with the client's credentials.

``uploads`` (the routes: create_repo, preupload, LFS batch and upload, commit, branches,
tags, refs and commit history), ``commits`` (a hub commit -> a ModelPack manifest tagged by
branch and commit id), ``payload`` (the commit's NDJSON, spooled), ``scanning`` (the
pickle files a commit adds, scanned before it is built), ``xet`` (the Xet CAS
endpoint: xorbs and shards -> registry blobs; the formats are ``core/xetformat``).
"""
