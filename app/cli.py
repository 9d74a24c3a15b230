"""``charlm-serve``: start the HTTP server (uvicorn) over a folder of checkpoints.

Every setting is a flag and a ``CHARLM_*`` environment variable (flags win). Flags are written
into the environment before uvicorn starts, so worker processes (``--workers N``) build the same
app through ``app.main:app_from_env``. API keys are taken from the environment or a key file only,
never from flags (the command line is visible to other users).
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import math
import os
import sys
from collections.abc import Sequence

import uvicorn
from pydantic import ValidationError

from app.api.middleware import RequestIdFilter
from app.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_SECRET_FIELDS = {"api_keys"}
WORKER_STARTUP_S = 120
SHUTDOWN_MARGIN_S = 5
# oneDNN keeps a compiled kernel with its scratch memory for every (batch, length) shape it has
# run, up to 1024 of them: scoring texts of ever new lengths grew a server by over 100 MiB in ten
# minutes. A smaller cache bounds that; users may still set the variable themselves.
ONEDNN_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
ONEDNN_CACHE_CAPACITY = "64"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="charlm-serve",
        description="Serve the character models of a folder over HTTP (OpenAI-compatible).",
        epilog="Each flag can also be set as CHARLM_<NAME>, e.g. CHARLM_MODELS_DIR. API keys: "
        "CHARLM_API_KEYS (comma-separated) or --api-key-file.",
    )
    for name, field in Settings.model_fields.items():
        if name in _SECRET_FIELDS:
            continue
        env = "CHARLM_" + name.upper()
        default = field.get_default(call_default_factory=True)
        shown = "unset" if default in (None, []) else str(default)
        parser.add_argument(
            _flag(name),
            dest=name,
            default=None,
            metavar=name.upper(),
            help=f"{field.description or name} (env {env}; default: {shown})",
        )
    return parser


def configure_logging(level: str) -> dict[str, object]:
    """Logging for this process and uvicorn's: every line carries the request id."""
    config: dict[str, object] = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"default": {"format": LOG_FORMAT}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }
    return config


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault(ONEDNN_CACHE_ENV, ONEDNN_CACHE_CAPACITY)  # read by worker processes too
    for name, value in vars(args).items():
        if value is not None:
            os.environ["CHARLM_" + name.upper()] = value
    try:
        settings = Settings()
        settings.load_api_keys()
    except (ValidationError, ValueError) as exc:
        print(f"charlm-serve: invalid settings: {exc}", file=sys.stderr)
        return 2
    log_config = configure_logging(settings.log_level)
    logging.config.dictConfig(log_config)
    uvicorn.run(
        "app.main:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=log_config,
        access_log=False,  # the app logs each request itself, with its request id
        # uvicorn cancels what is still running after this: leave the engines time, once their
        # grace period is over, to end every request with its final event (a busy CPU needs it)
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s) + SHUTDOWN_MARGIN_S,
        # a worker imports torch before it can answer the supervisor's health pings
        timeout_worker_healthcheck=WORKER_STARTUP_S,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
