"""``POST /v1/generate``: continue a prompt, whole or streamed as Server-Sent Events."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.api.schemas.common import (
    NEW_CHARS_LIMIT,
    TEXT_LIMIT,
    Flag,
    Limits,
    ModelId,
    Seed,
    StopString,
    StrictModel,
    Text,
    check_new_chars,
    check_text,
)
from app.engine.params import (
    DEFAULT_TEMPERATURE,
    MAX_N,
    MAX_STOPS,
    MAX_TEMPERATURE,
    MAX_TOP_K,
    FinishReason,
    GenerationParams,
)

DEFAULT_MAX_CHARS = 256


class GenerateRequest(StrictModel):
    """A prompt to continue; ``temperature: 0`` is greedy (the most likely character each step)."""

    model: ModelId | None = None
    prompt: Text = Field(default="", json_schema_extra=TEXT_LIMIT, description="may be empty")
    max_chars: int = Field(
        default=DEFAULT_MAX_CHARS,
        ge=0,
        json_schema_extra=NEW_CHARS_LIMIT,
        description=f"characters to generate at most ({DEFAULT_MAX_CHARS}, or the server's limit"
        " if lower)",
    )
    temperature: float = Field(
        default=DEFAULT_TEMPERATURE, ge=0.0, le=MAX_TEMPERATURE, description="0: greedy"
    )
    top_k: int = Field(default=0, ge=0, le=MAX_TOP_K, description="0: no limit")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="nucleus mass; 1: no limit")
    seed: Seed | None = Field(
        default=None, description="completion i uses seed + i; random when omitted"
    )
    stop: list[StopString] = Field(
        default_factory=list, max_length=MAX_STOPS, description="end a completion before these"
    )
    n: int = Field(default=1, ge=1, le=MAX_N, description="completions to generate")
    stream: Flag = Field(default=False, description="reply with Server-Sent Events")

    def check_limits(self, limits: Limits) -> None:
        check_text(self.prompt, "prompt", limits)
        if "max_chars" not in self.model_fields_set:
            # an omitted length means "the usual", so a stricter server lowers it, not refuses it
            self.max_chars = min(self.max_chars, limits.max_new_chars)
        check_new_chars(self.max_chars, "max_chars", limits)

    def to_params(self) -> GenerationParams:
        """The generation's settings (after ``check_limits``, which may lower ``max_chars``)."""
        return GenerationParams(
            max_chars=self.max_chars,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            stop=tuple(self.stop),
            seed=self.seed,
            n=self.n,
        )


class Completion(BaseModel):
    index: int
    text: str
    finish_reason: FinishReason
    num_chars: int
    seed: int = Field(description="generator seed; send it back to reproduce this text")


class GenerateUsage(BaseModel):
    prompt_chars: int
    completion_chars: int
    total_chars: int


class GenerateResponse(BaseModel):
    model: str
    completions: list[Completion]
    usage: GenerateUsage


class GenerateStreamEvent(BaseModel):
    """One SSE ``data:`` event of a streamed generation (before the final usage event)."""

    index: int
    text: str
    finish_reason: FinishReason | None = None
    num_chars: int | None = Field(default=None, description="set on the completion's last event")
    seed: int | None = Field(default=None, description="set on the completion's last event")


class GenerateStreamEnd(BaseModel):
    """The last JSON event of a stream, after every completion finished."""

    model: str
    usage: GenerateUsage
