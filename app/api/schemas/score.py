"""``POST /v1/score``: log-probabilities of texts, per text and optionally per character."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, Field, model_validator

from app.api.schemas.common import (
    ADAPT_CHARS_LIMIT,
    MAX_SCORE_TOP_K,
    MAX_TEXTS,
    TEXT_LIMIT,
    Flag,
    Limits,
    ModelId,
    StrictModel,
    Text,
    check_adapt_chars,
    check_per_char_entries,
    check_text,
)

ScoreMode = Literal["causal", "pll"]
#: bounds and defaults of adaptive scoring, those of ``models.adapt`` (which this module may not
#: import: it would bring torch); a test keeps the two the same
MAX_ADAPT_RATE = 0.01
MIN_ADAPT_SEGMENT, MAX_ADAPT_SEGMENT = 8, 1024
DEFAULT_ADAPT_RATE, DEFAULT_ADAPT_SEGMENT = 1e-3, 50


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

    adapt: Flag = Field(
        default=False,
        json_schema_extra=ADAPT_CHARS_LIMIT,
        description="adaptive scoring (dynamic evaluation): each text is read in segments, and"
        " after each segment a private copy of the model takes one gradient step on it, so"
        " later characters are predicted by a model that has read the earlier ones; the served"
        " model never changes. Left-to-right models only. Costs several times static scoring"
        " per character (docs/scoring.md); texts and context together may hold at most"
        " x-charlm-limit-value characters (CHARLM_MAX_ADAPT_CHARS)",
    )
    adapt_rate: float | None = Field(
        default=None,
        gt=0.0,
        le=MAX_ADAPT_RATE,
        description="with adapt: the step size, about how far each weight moves per step (each"
        " step is the gradient of the segment's mean loss divided by a running root mean square"
        f" of the text's gradients); default {DEFAULT_ADAPT_RATE:g}",
    )
    adapt_segment: int | None = Field(
        default=None,
        ge=MIN_ADAPT_SEGMENT,
        le=MAX_ADAPT_SEGMENT,
        description="with adapt: characters read between two steps (context included);"
        f" default {DEFAULT_ADAPT_SEGMENT}",
    )

    @model_validator(mode="after")
    def _top_k_needs_per_char(self) -> Self:
        if self.top_k and not self.per_char:
            raise ValueError("top_k > 0 needs per_char: true (alternatives are per character)")
        return self

    @model_validator(mode="after")
    def _adapt_settings_need_adapt(self) -> Self:
        if not self.adapt and (self.adapt_rate is not None or self.adapt_segment is not None):
            raise ValueError("adapt_rate and adapt_segment need adapt: true")
        if self.adapt and self.mode == "pll":
            raise ValueError("adapt needs a left-to-right score: mode 'causal' (or no mode)")
        return self

    def check_limits(self, limits: Limits) -> None:
        for i, text in enumerate(self.texts):
            check_text(text, f"texts.{i}", limits)
        check_text(self.context, "context", limits)
        if self.per_char:
            chars = sum(len(text) for text in self.texts)
            check_per_char_entries(chars, self.top_k, "per_char")
        if self.adapt:
            chars = sum(len(text) for text in self.texts) + len(self.context)
            check_adapt_chars(chars, "texts", limits)


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


class AdaptUsed(BaseModel):
    """The settings an adaptive request's texts were scored with, defaults filled in."""

    rate: float
    segment: int
    method: str = Field(description="the update rule: 'rms', steps normalised by gradient RMS")


class ScoreResponse(BaseModel):
    model: str
    mode: ScoreMode = Field(default="causal", description="how the texts were scored")
    adapt: AdaptUsed | None = Field(
        default=None, description="with adapt: true, the settings the texts were adapted with"
    )
    results: list[TextScoreResult] = Field(description="one per text, in order")
    usage: ScoreUsage
