"""Decide what each file of a model repository is: weight, config, code, doc, dataset.

The pattern lists and their precedence (config, then weight, then code, then
doc; case-insensitive match on the base name) are modctl's
(pkg/modelfile/constants.go), so an artifact built here without a Modelfile
has the same layer kinds as one built by ``modctl modelfile generate``.
Two additions: files under a top-level ``data/``, ``dataset/`` or
``datasets/`` folder with a tabular/record extension are datasets (modctl
never infers DATASET), and a file no pattern knows is still packaged, marked
``org.cncf.model.file.mediatype.untested: "true"``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import PurePosixPath

from ...oci.spec import LayerKind

WEIGHT_CONFIG_PATTERNS = (
    "*.json", "*.jsonl", "*.json5", "*.jsonc", "*.yaml", "*.yml", "*.toml", "*.ini",
    "*.config", "*.cfg", "*.conf", "*.properties", "*.props", "*.prop", "*.xml", "*.xsd",
    "*.rng", "*.modelcard", "*.meta", "*tokenizer.model*", "*.tiktoken", "vocab.txt",
    "merges.txt", "added_tokens.txt", "spiece.model", "sentencepiece*.model",
    "sentencepiece*.vocab", "tiktoken.model", "chat_template.jinja", "config.json.*",
    "*.hparams", "*.params", "*.hyperparams", "*.wandb", "*.mlflow", "*.tensorboard",
)  # fmt: skip

WEIGHT_PATTERNS = (
    "*.safetensors", "*.bin", "*.bin.*", "*.pt", "*.pth", "*.mar", "*.pte", "*.pt2", "*.ptl",
    "*.tflite", "*.h5", "*.hdf", "*.hdf5", "*.pb", "*.meta", "*.data-*", "*.index",
    "*.gguf", "*.gguf.*", "*.ggml", "*.ggmf", "*.ggjt", "*.q4_0", "*.q4_1", "*.q5_0",
    "*.q5_1", "*.q8_0", "*.f16", "*.f32", "*.ckpt", "*.checkpoint", "*.dist_ckpt",
    "tensor[0-9]*_[0-9]*", "*.tensor", "*.weights", "*.state", "*.embedding", "*.vocab",
    "*.ot", "*.engine", "*.trt", "*.onnx", "*.onnx_data*", "*.msgpack", "*.model", "*.pkl",
    "*.pickle", "*.keras", "*.joblib", "*.npy", "*.npz", "*.nc", "*.mlmodel", "*.coreml",
    "*.mil", "*.mleap", "*.surml", "*.llamafile", "*.llamafile.*", "*.caffemodel",
    "*.prototxt", "*.dlc", "*.circle", "*.nb", "*.arrow", "*.parquet", "*.ftz", "*.ark",
    "*.db",
)  # fmt: skip

CODE_PATTERNS = (
    "*.py", "*.ipynb", "*.sh", "*.patch", "*.c", "*.h", "*.hxx", "*.cpp", "*.cc", "*.cxx",
    "*.c++", "*.hpp", "*.hh", "*.h++", "*.java", "*.js", "*.mjs", "*.cjs", "*.jsx", "*.ts",
    "*.tsx", "*.go", "*.rs", "*.swift", "*.rb", "*.php", "*.scala", "*.kt", "*.kts", "*.r",
    "*.m", "*.mm", "*.f", "*.f90", "*.f95", "*.f03", "*.f08", "*.jl", "*.lua", "*.pl",
    "*.pm", "*.cs", "*.vb", "*.dart", "*.groovy", "*.elm", "*.erl", "*.hrl", "*.ex",
    "*.exs", "*.hs", "*.lhs", "*.clj", "*.cljs", "*.cljc", "*.cl", "*.lisp", "*.lsp",
    "*.scm", "*.ss", "*.rkt", "*.sql", "*.psql", "*.mysql", "*.sqlite", "*.zig", "*.cu",
    "*.cuh", "*.bash", "*.zsh", "*.fish", "*.csh", "*.tcsh", "*.ksh", "*.ps1", "*.psm1",
    "*.psd1", "*.bat", "*.cmd", "*.vbs", "*.wsf", "*.applescript", "*.scpt", "*.awk",
    "*.sed", "*.expect", "*.env", "*.env.*", ".env*", "makefile*", "*.dockerfile",
    "dockerfile*", "*.mk", "*.cmake", "cmakelists.txt", "*.gradle", "*.gradle.kts",
    "build.gradle*", "settings.gradle*", "*.sbt", "*.mill", "*.bazel", "*.bzl", "build*",
    "workspace*", "*.buck", "buck*", "*.ninja", "*.gyp", "*.gypi", "*.waf", "wscript*",
    "package.json", "package-lock.json", "yarn.lock", "pnpm-lock.yaml", "requirements*.txt",
    "pipfile*", "pyproject.toml", "setup.cfg", "tox.ini", "poetry.lock", "cargo.toml",
    "cargo.lock", "go.mod", "go.sum", "composer.json", "composer.lock", "gemfile*",
    "*.gemspec", "mix.exs", "mix.lock", "rebar.config", "rebar.lock", "*.so", "*.dll",
    "*.dylib", "*.lib", "*.a",
)  # fmt: skip

DOC_PATTERNS = (
    "*.txt", "*.md", "*.pdf", "license*", "readme*", "setup*", "*requirements*", "*.log",
    "*.tfevents*", "*.doc", "*.docx", "*.docm", "*.dot", "*.dotx", "*.dotm", "*.rtf",
    "*.odt", "*.ott", "*.fodt", "*.pages", "*.wpd", "*.xls", "*.xlsx", "*.xlsm", "*.xlsb",
    "*.xlt", "*.xltx", "*.xltm", "*.ods", "*.ots", "*.fods", "*.numbers", "*.csv", "*.ppt",
    "*.pptx", "*.pptm", "*.pps", "*.ppsx", "*.ppsm", "*.pot", "*.potx", "*.potm", "*.odp",
    "*.otp", "*.fodp", "*.key", "*.epub", "*.mobi", "*.azw", "*.azw3", "*.fb2", "*.fb3",
    "*.lit", "*.pdb", "*.djvu", "*.djv", "*.html", "*.htm", "*.xhtml", "*.mhtml", "*.mht",
    "*.xml", "*.xsl", "*.xslt", "*.tex", "*.latex", "*.ltx", "*.bib", "*.rst", "*.asciidoc",
    "*.adoc", "*.textile", "*.wiki", "*.mediawiki", "*.org", "*.texi", "*.texinfo", "*.info",
    "*.man", "*.chm", "*.hlp", "*.xps", "*.jpg", "*.jpeg", "*.png", "*.gif", "*.bmp",
    "*.tiff", "*.ico", "*.webp", "*.heic", "*.heif", "*.hevc", "*.svg", "*.mp4", "*.mov",
    "*.avi", "*.mkv", "*.webm", "*.m4v", "*.flv", "*.wmv", "*.mpg", "*.mpeg",
)  # fmt: skip

DATASET_DIRS = ("data", "dataset", "datasets")
DATASET_PATTERNS = (
    "*.parquet", "*.arrow", "*.csv", "*.tsv", "*.jsonl", "*.json", "*.txt", "*.tfrecord",
    "*.avro", "*.orc", "*.feather",
)  # fmt: skip

# modctl: an unknown file larger than this is probably weights.
UNKNOWN_WEIGHT_THRESHOLD = 128 * 1000 * 1000

# Names never packaged (modctl's skip list, plus OS litter).
SKIP_PATTERNS = (".*", "modelfile", "__pycache__", "*.pyc", "*.pyo", "*.pyd", "thumbs.db")


@dataclass(frozen=True)
class Classification:
    kind: LayerKind
    untested: bool = False


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, pattern) for pattern in patterns)


def is_skipped(name: str) -> bool:
    """True for a file or folder name the scan never descends into or packages."""
    return _matches(name, SKIP_PATTERNS)


def classify(relpath: str, size: int) -> Classification:
    """The layer kind for a file at ``relpath`` (POSIX, relative) of ``size`` bytes."""
    path = PurePosixPath(relpath)
    name = path.name
    if (
        len(path.parts) > 1
        and path.parts[0].lower() in DATASET_DIRS
        and _matches(name, DATASET_PATTERNS)
    ):
        return Classification(LayerKind.DATASET)
    for kind, patterns in (
        (LayerKind.WEIGHT_CONFIG, WEIGHT_CONFIG_PATTERNS),
        (LayerKind.WEIGHT, WEIGHT_PATTERNS),
        (LayerKind.CODE, CODE_PATTERNS),
        (LayerKind.DOC, DOC_PATTERNS),
    ):
        if _matches(name, patterns):
            return Classification(kind)
    if size > UNKNOWN_WEIGHT_THRESHOLD:
        return Classification(LayerKind.WEIGHT, untested=True)
    return Classification(LayerKind.CODE, untested=True)
