"""`GET /`: the built-in chat page, and its files under `/static/{version}/`.

The page is plain HTML, CSS and JavaScript modules kept in turnstream/web/static/
(no build step, nothing from a CDN). They are read once, when the first request
asks for them, and served from memory:

- `/` is index.html, with `{{static}}` replaced by `static/<version>`, where the
  version is a hash of every file of the bundle. It is `Cache-Control: no-cache`
  (the browser asks again each time; an unchanged page costs a `304`).
- `/static/<version>/<name>` is immutable: cached for a year, since a change of any
  file changes the version and so every URL. Another version gets `404`.

Every answer carries an `ETag` (a `304` for a matching `If-None-Match`), a
`Last-Modified`, and a Content-Security-Policy that allows only the page's own
scripts, styles and API (no inline script or style, no other origin).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email.utils import formatdate
from functools import cache
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response

import turnstream

STATIC_DIR = Path(turnstream.__file__).resolve().parent / "web" / "static"
INDEX = "index.html"
PLACEHOLDER = "{{static}}"

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
NO_CACHE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str
    last_modified: str


@dataclass(frozen=True)
class Bundle:
    version: str
    index: Asset
    assets: dict[str, Asset]


@cache
def bundle() -> Bundle:
    """The page's files, read once: index.html apart, the others by name."""
    files = {
        p.name: p
        for p in sorted(STATIC_DIR.iterdir())
        if p.is_file() and p.suffix in MEDIA_TYPES and not p.name.startswith(".")
    }
    digest = hashlib.sha256()
    for name, path in files.items():
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    version = digest.hexdigest()[:16]
    assets = {name: _asset(path, path.read_bytes()) for name, path in files.items()}
    index_path = files[INDEX]
    page = index_path.read_bytes().replace(PLACEHOLDER.encode(), f"static/{version}".encode())
    del assets[INDEX]
    return Bundle(version, _asset(index_path, page), assets)


def _asset(path: Path, body: bytes) -> Asset:
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    modified = formatdate(path.stat().st_mtime, usegmt=True)
    return Asset(body, MEDIA_TYPES[path.suffix], etag, modified)


def _serve(request: Request, asset: Asset, cache_control: str) -> Response:
    headers = {
        **SECURITY_HEADERS,
        "Cache-Control": cache_control,
        "ETag": asset.etag,
        "Last-Modified": asset.last_modified,
    }
    wanted = request.headers.get("if-none-match", "")
    if asset.etag in (tag.strip().removeprefix("W/") for tag in wanted.split(",")):
        return Response(status_code=304, headers=headers)
    body = b"" if request.method == "HEAD" else asset.body
    headers["Content-Length"] = str(len(asset.body))
    return Response(body, media_type=asset.media_type, headers=headers)


@router.api_route("/", methods=["GET", "HEAD"])
async def page(request: Request) -> Response:
    return _serve(request, bundle().index, NO_CACHE)


@router.api_route("/static/{version}/{name}", methods=["GET", "HEAD"])
async def static(request: Request, version: str, name: str) -> Response:
    found = bundle()
    asset = found.assets.get(name)
    if asset is None or version != found.version:
        raise HTTPException(status_code=404)
    return _serve(request, asset, IMMUTABLE)
