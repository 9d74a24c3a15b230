"""``POST /v1/infill``: fill masked gaps of a text with a bidirectional model."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.api.schemas.common import TEXT_LIMIT, Limits, ModelId, StrictModel, Text, check_text

MAX_INFILL_TOP_K = 20
#: masked characters in one request: each costs a few forward passes over the whole text
MAX_MASKED_CHARS = 256
#: characters read by the model in one request: about 4 passes over the text per masked character,
#: and up to 64 with ``top_k`` (a beam of alternatives per gap)
MAX_INFILL_WORK = 4_000_000


def infill_work(text_chars: int, masked: int, top_k: int) -> int:
    return text_chars * masked * (64 if top_k else 4)


class InfillRequest(StrictModel):
    """A text whose ``mask`` characters are to be replaced by the model's choices."""

    model: ModelId | None = None
    text: Text = Field(
        min_length=1,
        json_schema_extra=TEXT_LIMIT,
        description="the text, with each unknown character written as the mask character",
    )
    mask: str = Field(
        default="_", min_length=1, max_length=1, description="the character that marks a gap"
    )
    top_k: int = Field(
        default=0,
        ge=0,
        le=MAX_INFILL_TOP_K,
        description="also return, per masked position, the k likeliest characters, and per gap up"
        " to min(k, 5) whole fills ranked by the text's pseudo-log-likelihood",
    )

    def check_limits(self, limits: Limits) -> None:
        check_text(self.text, "text", limits)


class Candidate(BaseModel):
    char: str
    prob: float = Field(description="probability given every other character of the filled text")


class Alternative(BaseModel):
    text: str = Field(description="a fill of the whole gap")
    pll: float = Field(description="pseudo-log-likelihood of the text with this fill")


class Gap(BaseModel):
    start: int = Field(description="offset of the gap's first character, in code points")
    text: str = Field(description="the characters chosen for the gap")
    candidates: list[list[Candidate]] | None = Field(
        default=None, description="with top_k: per masked position, the likeliest characters"
    )
    alternatives: list[Alternative] | None = Field(
        default=None, description="with top_k: fills of the whole gap, best (the one used) first"
    )


class InfillResponse(BaseModel):
    model: str
    text: str = Field(description="the text with every gap filled")
    gaps: list[Gap]
    pll: float = Field(description="pseudo-log-likelihood (natural log) of the filled text")
    pll_bits_per_char: float
    num_masked: int
