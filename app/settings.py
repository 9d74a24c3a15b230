"""Server configuration: every option is a ``CHARLM_*`` environment variable (or a CLI flag).

Settings are built once by whoever starts the app (``charlm-serve`` or a test) and handed to
``create_app(settings)``; nothing reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: a model id: the stem of a checkpoint file in the models folder, and what a request names
MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def _split_commas(value: object) -> object:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; lists pass through (tests build Settings directly)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Configuration of one server process."""

    model_config = SettingsConfigDict(env_prefix="CHARLM_", extra="forbid", frozen=True)

    # where checkpoints live: every *.safetensors file is a model, its stem the model id
    models_dir: Path = Field(
        default=Path("checkpoints"), description="folder of *.safetensors checkpoints"
    )
    default_model: str | None = Field(
        default=None,
        description="model used when a request names none (unset: the only model, if one)",
    )
    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=8000, ge=0, le=65535, description="port to listen on")
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes")
    log_level: str = Field(
        default="info",
        pattern="^(critical|error|warning|info|debug)$",
        description="critical, error, warning, info or debug",
    )
    device: str = Field(default="cpu", description="torch device the models run on")

    # limits
    max_request_bytes: int = Field(default=1_000_000, ge=1, description="413 above this body size")
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="408 when a request body takes longer to arrive"
    )
    max_text_chars: int = Field(
        default=100_000, ge=1, description="413 above this many chars in a text"
    )
    max_new_chars: int = Field(
        default=4096, ge=1, description="413 above this max_chars / max_tokens"
    )
    max_adapt_chars: int = Field(
        default=20_000,
        ge=1,
        description="413 above this many chars (texts and context) in a /v1/score request with"
        " adapt: true, which costs several times a static one and holds the model's worker",
    )
    max_batch_size: int = Field(default=32, ge=1, description="rows one engine step may hold")
    max_queue: int = Field(default=256, ge=1, description="waiting requests per model before 429")
    request_timeout_s: float = Field(
        default=120.0, gt=0, description="engine time allowed per request"
    )
    shutdown_grace_s: float = Field(
        default=10.0, ge=0, description="time to finish requests on stop"
    )
    shutdown_delay_s: float = Field(
        default=0.0,
        ge=0,
        description="on SIGTERM, seconds to go on serving while /ready answers 503 (draining)"
        " before the listener closes, so load balancers stop sending requests first",
    )
    reload_interval_s: float = Field(
        default=5.0,
        ge=0,
        description="seconds between checks of the models folder for new, changed and removed"
        " checkpoints; 0: only at start and on POST /v1/models/reload",
    )

    # access
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="comma-separated Bearer keys; empty: no auth"
    )
    api_key_file: Path | None = Field(
        default=None, description="file with one key per line (# comments)"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated allowed origins; empty: CORS closed"
    )

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split_commas(value)

    def load_api_keys(self) -> list[str]:
        """Keys from ``api_keys`` and ``api_key_file``; a ``ValueError`` names an unusable file."""
        keys = [k.get_secret_value() for k in self.api_keys if k.get_secret_value()]
        if self.api_key_file is not None:
            try:
                text = self.api_key_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"cannot read CHARLM_API_KEY_FILE {self.api_key_file}: {exc}"
                ) from exc
            for line in text.splitlines():
                key = line.strip()
                if key and not key.startswith("#"):
                    keys.append(key)
            if not keys:
                raise ValueError(f"CHARLM_API_KEY_FILE {self.api_key_file} holds no key")
        return keys
