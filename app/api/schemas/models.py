"""``GET /v1/models`` (OpenAI's list shape), ``GET /v1/models/{id}`` (with model details) and
``POST /v1/models/reload``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ModelUpdate(BaseModel):
    """A newer checkpoint file of a serving model that does not serve (yet)."""

    status: Literal["loading", "unavailable"]
    error: str | None = Field(default=None, description="why it cannot be loaded")
    sha256: str | None = Field(default=None, description="SHA-256 of the file, when it was read")
    size_bytes: int
    created: int = Field(description="file modification time, Unix seconds")


class ModelCard(BaseModel):
    """OpenAI's model object, plus ``status``, the file it was loaded from and when, and, for an
    unavailable model, ``error``."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="checkpoint file modification time, Unix seconds")
    owned_by: str = "charlm"
    status: Literal["ready", "unavailable"]
    error: str | None = Field(default=None, description="why an unavailable model failed to load")
    sha256: str | None = Field(
        default=None, description="SHA-256 of the checkpoint file the model serving was read from"
    )
    size_bytes: int | None = Field(default=None, description="size of that file")
    loaded_at: int | None = Field(
        default=None, description="when this version began serving, Unix seconds"
    )
    draining: int = Field(
        default=0, description="older versions of this model still finishing their requests"
    )
    update: ModelUpdate | None = Field(
        default=None,
        description="a newer file of this model that does not serve: loading, or unavailable"
        " with the reason (the version above keeps serving meanwhile)",
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ModelDetails(ModelCard):
    """The card plus what the checkpoint says about the model (absent when unavailable)."""

    file: str = Field(description="checkpoint file name inside the models folder")
    arch: str | None = None
    can_generate: bool | None = None
    vocab_size: int | None = None
    embed_size: int | None = None
    hidden_size: int | None = None
    num_layers: int | None = None
    num_parameters: int | None = None
    options: dict[str, Any] | None = Field(
        default=None, description="architecture-specific settings"
    )
    training: dict[str, Any] | None = Field(
        default=None,
        description="training summary stored in the checkpoint (steps, best validation bpc)",
    )
    checkpoint_created: str | None = Field(
        default=None, description="ISO 8601 time the file was written"
    )


class ModelChangeInfo(BaseModel):
    """What a check of the models folder did to one model."""

    id: str
    change: Literal["added", "replaced", "removed", "failed"] = Field(
        description="added: serves now; replaced: a new version serves, the old one drains;"
        " removed: its file is gone; failed: the new or changed file cannot be loaded (a"
        " version loaded before keeps serving)"
    )
    sha256: str | None = None
    error: str | None = None


class ReloadResponse(BaseModel):
    object: Literal["reload"] = "reload"
    changes: list[ModelChangeInfo]
    data: list[ModelCard] = Field(description="every model after the check")
