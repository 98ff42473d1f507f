"""Every byte, lock and database on this node.

``store`` (the local OCI layout), ``unpack`` (a directory as a Target), ``partial``
(resumable verified downloads), ``diskspace``, ``cache`` (the node cache of model
trees), ``hfcache`` (the Hugging Face cache layout), ``blobinfo`` (where blobs were
seen); ``_fsutil``, ``_locks`` and ``_sqlite`` are their private helpers.
"""
