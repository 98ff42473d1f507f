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
    build,
    cache_list,
    cache_prune,
    cache_remove,
    copy,
    doctor,
    generate_modelfile,
    inspect,
    keygen,
    list_models,
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
from .build import BuildResult
from .cache import CacheEntry
from .errors import (
    AuthenticationError,
    IntegrityError,
    ModelpackError,
    NotFoundError,
    RegistryUnavailableError,
    UsageError,
)
from .inspection import Inspection
from .reference import Reference, parse_reference
from .settings import Settings
from .transfer import TransferResult
from .verify import DirectoryReport

__all__ = [
    "AuthenticationError",
    "CacheEntry",
    "CachePruneResult",
    "DirectoryReport",
    "BuildResult",
    "Inspection",
    "IntegrityError",
    "LocalModel",
    "ModelpackError",
    "NotFoundError",
    "PruneResult",
    "Reference",
    "RegistryUnavailableError",
    "Settings",
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
    "inspect",
    "keygen",
    "list_models",
    "login",
    "logout",
    "parse_reference",
    "prune",
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
