"""The read side: a model resolved with the client's credentials and its files served.

``models`` (repo + revision -> a verified manifest), ``pullthrough`` (files from the node
cache, one pull per model), ``handlers`` (the answers of model info, tree, paths-info and
resolve), ``catalog`` (``GET /api/models``: search, filters, pages, from the registry's
catalog per client), ``harborlist`` (what a Harbor lists, for the catalog), ``card``
(README -> front matter and text), ``scans`` (what the pickle scans left, as the hub's
security fields and the page's mark), ``xet`` (Xet downloads of files uploaded through
Xet: read tokens, reconstructions, xorb byte ranges by signed URL).
"""
