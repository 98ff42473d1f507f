"""A repo or revision the registry lacks, imported from an upstream hub on first request.

``importer`` (one import per revision, built and pushed as a ModelPack artifact),
``files`` (the upstream's listing held to caps, each file hashed as it is fetched); every
connection goes through ``core.egress``.
"""
