"""``GET /``: the playground page (plain HTML, CSS and JavaScript, no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.api.errors import APIError

STATIC = Path(__file__).resolve().parents[2] / "static"
_FILES = {
    "playground.js": "text/javascript",
    "playground.css": "text/css",
}

router = APIRouter(tags=["playground"])


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str) -> FileResponse:
    """Only the page's own files, by exact name: a request never becomes a path."""
    media_type = _FILES.get(name)
    if media_type is None:
        raise APIError(404, f"no static file {name!r}", code="not_found")
    return FileResponse(STATIC / name, media_type=media_type)
