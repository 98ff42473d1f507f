"""The OCI vocabulary and the graph copy: no filesystem and no HTTP code.

``spec`` (media types, descriptors, manifests, the model config), ``reference``,
``digests``, ``limits`` (caps on what an untrusted artifact may make us hold),
``target`` (the Target interface and its named optional capabilities) and
``copy`` (one graph copy between any two Targets).
"""
