"""Making a ModelPack artifact from files.

``source/`` (where files come from: a directory, hf://, modelscope://, a Modelfile),
``metadata`` and ``gguf`` (the model config derived from headers), ``overrides``
(``--set`` and Modelfile values) and ``build`` (layers into the local store).
"""
