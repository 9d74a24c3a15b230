"""``POST /v1/completions``: OpenAI's legacy completions, one character being one token."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, Field, model_validator

from app.api.schemas.common import (
    MAX_LOGPROBS,
    MAX_PROMPTS,
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
    check_per_char_entries,
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

DEFAULT_MAX_TOKENS = 16  # OpenAI's default


class StreamOptions(StrictModel):
    include_usage: Flag = Field(default=False, description="send a last chunk with the usage")


class CompletionRequest(StrictModel):
    """OpenAI's fields; ``top_k`` is an extension. Penalties are accepted only at 0."""

    model: ModelId | None = None
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_PROMPTS)] = Field(
        default="", json_schema_extra=TEXT_LIMIT, description="a prompt or a list of prompts"
    )
    max_tokens: int | None = Field(
        default=DEFAULT_MAX_TOKENS,
        ge=0,
        json_schema_extra=NEW_CHARS_LIMIT,
        description="characters to generate; 0 with echo scores the prompt",
    )
    temperature: float | None = Field(
        default=None, ge=0.0, le=MAX_TEMPERATURE, description=f"default {DEFAULT_TEMPERATURE:g}"
    )
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, description="default 1")
    top_k: int | None = Field(default=None, ge=0, le=MAX_TOP_K, description="0: no limit")
    n: int = Field(default=1, ge=1, le=MAX_N)
    stream: Flag = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(
        default=None, ge=0, le=MAX_LOGPROBS, description="log-probabilities and k top alternatives"
    )
    echo: Flag = Field(default=False, description="return the prompt before the completion")
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOPS)] | None = None
    seed: Seed | None = Field(default=None, description="completion i of a prompt uses seed + i")
    presence_penalty: float | None = Field(default=None, ge=0.0, le=0.0, description="only 0")
    frequency_penalty: float | None = Field(default=None, ge=0.0, le=0.0, description="only 0")
    user: str | None = Field(default=None, max_length=256, description="ignored")

    @model_validator(mode="after")
    def _check_combinations(self) -> Self:
        if self.stream and self.logprobs is not None:
            raise ValueError("logprobs cannot be combined with stream: true")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options needs stream: true")
        return self

    def prompts(self) -> list[str]:
        return self.prompt if isinstance(self.prompt, list) else [self.prompt]

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return self.stop if isinstance(self.stop, list) else [self.stop]

    def max_new_chars(self) -> int:
        return DEFAULT_MAX_TOKENS if self.max_tokens is None else self.max_tokens

    def to_params(self) -> GenerationParams:
        """The settings of each prompt's completions (after ``check_limits``)."""
        return GenerationParams(
            max_chars=self.max_new_chars(),
            temperature=DEFAULT_TEMPERATURE if self.temperature is None else self.temperature,
            top_k=self.top_k or 0,
            top_p=1.0 if self.top_p is None else self.top_p,
            stop=tuple(self.stops()),
            seed=self.seed,
            n=self.n,
        )

    def check_limits(self, limits: Limits) -> None:
        if self.max_tokens is None or "max_tokens" not in self.model_fields_set:
            # omitted or null: OpenAI's default, lowered (not refused) by a stricter server
            self.max_tokens = min(DEFAULT_MAX_TOKENS, limits.max_new_chars)
        prompts = self.prompts()
        for i, prompt in enumerate(prompts):
            check_text(prompt, "prompt" if len(prompts) == 1 else f"prompt.{i}", limits)
        check_new_chars(self.max_new_chars(), "max_tokens", limits)
        if self.logprobs is not None:
            # the most characters the choices can hold, each with its logprob and alternatives
            echoed = sum(len(p) for p in prompts) if self.echo else 0
            chars = (echoed + len(prompts) * self.max_new_chars()) * self.n
            check_per_char_entries(chars, self.logprobs, "logprobs")


class CompletionLogprobs(BaseModel):
    """Per character: the character, its logprob, the top alternatives and its offset."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int] = Field(description="offsets into prompt + completion, in characters")


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    """The whole reply, and (with ``stream``) each SSE chunk; ``usage`` is null in chunks."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None
