"""``POST /v1/score``: log-probabilities of texts, per text and optionally per character."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, Field, model_validator

from app.api.schemas.common import (
    MAX_SCORE_TOP_K,
    MAX_TEXTS,
    TEXT_LIMIT,
    Flag,
    Limits,
    ModelId,
    StrictModel,
    Text,
    check_per_char_entries,
    check_text,
)

ScoreMode = Literal["causal", "pll"]


class ScoreRequest(StrictModel):
    """Texts to score. Each is read after ``<bos>`` and ``context``; every character is scored."""

    model: ModelId | None = None
    texts: list[Text] = Field(
        min_length=1,
        max_length=MAX_TEXTS,
        json_schema_extra=TEXT_LIMIT,
        description="texts to score, each independently",
    )
    context: Text = Field(
        default="",
        json_schema_extra=TEXT_LIMIT,
        description="prefix that conditions but is not scored",
    )
    per_char: Flag = Field(default=False, description="return a logprob for every character")
    top_k: int = Field(
        default=0, ge=0, le=MAX_SCORE_TOP_K, description="with per_char: the k likeliest characters"
    )
    mode: ScoreMode | None = Field(
        default=None,
        description="'causal': left-to-right probability; 'pll': pseudo-log-likelihood, each"
        " character given both sides (bidirectional models only). Default: the model's own",
    )

    @model_validator(mode="after")
    def _top_k_needs_per_char(self) -> Self:
        if self.top_k and not self.per_char:
            raise ValueError("top_k > 0 needs per_char: true (alternatives are per character)")
        return self

    def check_limits(self, limits: Limits) -> None:
        for i, text in enumerate(self.texts):
            check_text(text, f"texts.{i}", limits)
        check_text(self.context, "context", limits)
        if self.per_char:
            chars = sum(len(text) for text in self.texts)
            check_per_char_entries(chars, self.top_k, "per_char")


class TopChar(BaseModel):
    char: str = Field(description="a character, or <unk> for any unknown character")
    logprob: float


class CharScore(BaseModel):
    char: str
    offset: int = Field(description="index of the character in the text, in code points")
    logprob: float = Field(description="natural log-probability of this character")
    top: list[TopChar] | None = None


class TextScoreResult(BaseModel):
    logprob: float = Field(description="natural log-probability of the whole text")
    bits_per_char: float
    perplexity: float = Field(description="exp(-logprob / num_chars); 1 for an empty text")
    num_chars: int
    num_unknown: int = Field(description="characters outside the model's vocabulary")
    per_char: list[CharScore] | None = None


class ScoreUsage(BaseModel):
    chars_scored: int = Field(description="characters of all texts (context excluded)")
    context_chars: int


class ScoreResponse(BaseModel):
    model: str
    mode: ScoreMode = Field(default="causal", description="how the texts were scored")
    results: list[TextScoreResult] = Field(description="one per text, in order")
    usage: ScoreUsage
