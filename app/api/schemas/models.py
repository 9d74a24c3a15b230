"""``GET /v1/models`` (OpenAI's list shape) and ``GET /v1/models/{id}`` (with model details)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ModelCard(BaseModel):
    """OpenAI's model object, plus ``status`` and, for an unavailable model, ``error``."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="checkpoint file time, Unix seconds")
    owned_by: str = "charlm"
    status: Literal["ready", "unavailable"]
    error: str | None = Field(default=None, description="why an unavailable model failed to load")


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
