"""What every part of the gateway speaks, holding no state of its own.

``config`` (the registry it fronts, the node cache, policies, an upstream import's
caps), ``hub`` (the hub's repo ids, revisions, paths, files and errors; ``path_problem``,
the one rule for every hub path), ``http`` (requests, responses, Range), ``crosssite``
(a browser's cross-site writes refused), ``egress`` (where an upstream import may connect),
``xetformat`` (Xet shards and xorbs read and bounded, chunk and file hashes; LZ4 and BLAKE3:
the upload side in ``writes/xet``, the download side in ``read/xet``).
"""
