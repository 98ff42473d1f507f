"""Signatures: PEM keys, cosign-format signatures, OpenSSF model-signing bundles.

``keys``, ``cosign`` (simple-signing payloads in the ``.sig`` tag and as referrers),
``openssf`` (model-signing bundles of the file tree) and ``attach`` (pushing a
referrer artifact that points at a model).
"""
