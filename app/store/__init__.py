"""The models folder -> one engine per checkpoint, kept in step with the folder while serving.

The model id is the file's stem. Ids come from file names only, so a request's ``model`` is only
ever a key looked up here, never joined into a path. A file that fails to load (bad name, corrupt,
foreign format, half written) is logged and listed as unavailable with its reason; the others
serve, and a version that serves keeps serving until a good file replaces it.

- ``model_store``: ``ModelStore``, the checks of the folder and the lookups
- ``loading``: one file read into a new version of its model, or listed with why it cannot be
- ``retiring``: old versions finishing the requests that hold them, then stopped and freed
- ``entries``: one version of a model (``ModelEntry``), what a check changed, which versions the
  requests in flight hold
- ``files``: the folder's checkpoint files, their identity, reading one while it stands still
- ``memory``: a dropped model's memory back to the system
- ``errors``: a lookup that finds no model to serve (mapped to HTTP in ``app.api.errors``)
"""

from app.store.entries import ModelChange, ModelEntry, PendingFile, tracking_model_use
from app.store.errors import (
    ModelNotFoundError,
    ModelRequiredError,
    ModelUnavailableError,
    NoModelError,
    StoreError,
)
from app.store.files import CHECKPOINT_SUFFIX, RESUME_SUFFIX, FileIdentity
from app.store.model_store import ModelStore

__all__ = [
    "CHECKPOINT_SUFFIX",
    "RESUME_SUFFIX",
    "FileIdentity",
    "ModelChange",
    "ModelEntry",
    "ModelNotFoundError",
    "ModelRequiredError",
    "ModelStore",
    "ModelUnavailableError",
    "NoModelError",
    "PendingFile",
    "StoreError",
    "tracking_model_use",
]
