"""modelpack: build, push, pull and unpack CNCF ModelPack artifacts through OCI registries.

import modelpack
modelpack.build("./my-model", tag="127.0.0.1:5000/team/bert:v1")
modelpack.push("127.0.0.1:5000/team/bert:v1", plain_http=True)
path = modelpack.pull("127.0.0.1:5000/team/bert:v1", plain_http=True)
"""

from ._version import __version__
from .api import (
    CachePruneResult,
    LocalModel,
    PruneResult,
    SignResult,
    build,
    cache_list,
    cache_prune,
    cache_remove,
    copy,
    doctor,
    generate_modelfile,
    image,
    inspect,
    keygen,
    list_models,
    list_tags,
    login,
    logout,
    prune,
    pull,
    pull_model,
    push,
    remove,
    sign,
    tag,
    use_model,
    verify,
    verify_dir,
)
from .diagnostics import Check, Status
from .dircheck import DirectoryReport
from .display import human_size, progress_display
from .dragonfly import PreheatJob, PreheatScope, preheat
from .errors import (
    AuthenticationError,
    IntegrityError,
    ModelpackError,
    NotFoundError,
    RegistryUnavailableError,
    UsageError,
)
from .images import ImageResult
from .inspection import Inspection
from .model.build import BuildResult
from .oci.reference import Reference, parse_reference
from .oci.spec import Descriptor
from .progress import Progress, ProgressDisplay
from .settings import Settings
from .signing.cosign import SignatureCheck
from .signing.keys import KeyPair, key_is_encrypted
from .storage.cache import CacheEntry
from .storage.interrupted import InterruptedPull
from .transfer import TransferResult

__all__ = [
    "AuthenticationError",
    "BuildResult",
    "CacheEntry",
    "InterruptedPull",
    "CachePruneResult",
    "Check",
    "Descriptor",
    "DirectoryReport",
    "ImageResult",
    "Inspection",
    "IntegrityError",
    "KeyPair",
    "LocalModel",
    "ModelpackError",
    "NotFoundError",
    "PreheatJob",
    "PreheatScope",
    "Progress",
    "ProgressDisplay",
    "PruneResult",
    "Reference",
    "RegistryUnavailableError",
    "Settings",
    "SignResult",
    "SignatureCheck",
    "Status",
    "TransferResult",
    "UsageError",
    "__version__",
    "build",
    "cache_list",
    "cache_prune",
    "cache_remove",
    "copy",
    "doctor",
    "generate_modelfile",
    "human_size",
    "image",
    "inspect",
    "key_is_encrypted",
    "keygen",
    "list_models",
    "list_tags",
    "login",
    "logout",
    "parse_reference",
    "progress_display",
    "prune",
    "preheat",
    "pull",
    "pull_model",
    "push",
    "remove",
    "sign",
    "tag",
    "use_model",
    "verify",
    "verify_dir",
]
