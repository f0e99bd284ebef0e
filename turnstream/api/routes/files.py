"""A conversation's workspace over HTTP: upload, list, download and delete its files.

Every route is the owner's, as every conversation route (403 for anyone else's).
A download opens with the bearer token or with a signed file link
(`?token=`, from a `file` event or a listing), so that `<a href>` and
`<img src>` work in a browser. A download is always an attachment, never
sniffed, under a CSP sandbox: an HTML or SVG file the agent wrote can never
run script in the app's origin.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from turnstream import logs
from turnstream.api.body import RAW_BODY, UPLOAD_BODY, capped_stream, read_capped
from turnstream.api.deps import Authorization, ConversationDep, RuntimeDep, authorize_follower
from turnstream.api.errors import documented
from turnstream.api.schemas import DOWNLOAD, PATH_PATTERN, FileEntry, FileList
from turnstream.errors import (
    AccessDenied,
    FileNotFound,
    InvalidPath,
    InvalidUpload,
    PathConflict,
    UnknownPath,
    WorkspaceFull,
)
from turnstream.live import tokens
from turnstream.runtime import Runtime
from turnstream.store.paths import MAX_PATH_BYTES, check_path
from turnstream.store.workspace import FileInfo, Limits, NewFile

router = APIRouter(
    prefix="/conversations/{cid}/files", tags=["files"], responses=documented(AccessDenied)
)

# Room for a multipart body's boundaries and part headers beyond the files themselves.
_ENVELOPE_BYTES = 1024 * 1024
# A listing's prefix: everything, or a path (a folder's, with its /).
_PREFIX = rf"^(\.?|{PATH_PATTERN}/?)$"
# A write's refusals: a bad path, a clash, a limit, a client gone mid-body. (A `{path}`
# holding a newline matches no route: 404, UnknownPath.)
_WRITE = (InvalidPath, PathConflict, WorkspaceFull, ClientDisconnect)
FilePath = Annotated[
    str,
    Path(
        description="The file's path in the workspace, such as out/a.md: relative, in NFC, "
        "at most 1,024 bytes and 255 a segment (docs/protocol.md, 'Paths')",
        json_schema_extra={"pattern": rf"^{PATH_PATTERN}$", "maxLength": MAX_PATH_BYTES},
    ),
]


async def _entries(rt: Runtime, user_id: str, cid: str, infos: list[FileInfo]) -> list[FileEntry]:
    """The files as the API lists them, each with a fresh signed link."""
    paths = [info.path for info in infos]
    links = await tokens.file_links(rt.redis, rt.settings, user_id=user_id, cid=cid, paths=paths)
    return [FileEntry(**info.entry(), url=url) for info, url in zip(infos, links, strict=True)]


@router.post(
    "",
    status_code=201,
    response_model=list[FileEntry],
    openapi_extra={"requestBody": UPLOAD_BODY},
    responses=documented(InvalidUpload, *_WRITE),
)
async def upload_files(
    request: Request, rt: RuntimeDep, conversation: ConversationDep
) -> list[FileEntry]:
    """Store the uploaded files, all of them or (past a limit, on a bad path) none."""
    limits = Limits.of(rt.settings)
    files = await _read_upload(request, limits)
    stored = await rt.files.write(conversation.id, files, limits=limits, uploaded=True)
    return await _entries(rt, conversation.user_id, conversation.id, stored)


@router.get("", response_model=FileList, responses=documented(InvalidPath))
async def list_files(
    rt: RuntimeDep,
    conversation: ConversationDep,
    prefix: Annotated[
        str,
        Query(max_length=MAX_PATH_BYTES, json_schema_extra={"pattern": _PREFIX}),
    ] = "",
) -> FileList:
    """The workspace's files, sorted by path (those under `prefix` only, if given)."""
    listing = await rt.files.listing(conversation.id, prefix=prefix)
    items = await _entries(rt, conversation.user_id, conversation.id, listing.items)
    return FileList(items=items, total=listing.total, bytes=listing.bytes)


@router.put(
    "/{path:path}",
    response_model=FileEntry,
    openapi_extra={"requestBody": RAW_BODY},
    responses=documented(
        *_WRITE, UnknownPath, ok={201: {"model": FileEntry, "description": "A new file"}}
    ),
)
async def put_file(
    request: Request,
    response: Response,
    rt: RuntimeDep,
    conversation: ConversationDep,
    path: FilePath,
) -> FileEntry:
    """Create (201) or replace (200) the file at `path` with the request's body."""
    path = check_path(path)  # before the body is read (the store checks it again as it writes)
    limits = Limits.of(rt.settings)
    data = await read_capped(request, limits.file_bytes, too_large=_file_too_large(limits))
    new = NewFile(path, data, request.headers.get("content-type"))
    (info,) = await rt.files.write(conversation.id, [new], limits=limits, uploaded=True)
    response.status_code = 201 if info.version == 1 else 200
    (entry,) = await _entries(rt, conversation.user_id, conversation.id, [info])
    return entry


@router.get(
    "/{path:path}",
    response_class=Response,
    responses=documented(InvalidPath, FileNotFound, UnknownPath, ok=DOWNLOAD),
)
async def download_file(
    request: Request,
    rt: RuntimeDep,
    cid: Annotated[str, Path()],
    path: FilePath,
    authorization: Authorization,
    token: Annotated[
        str | None,
        Query(
            max_length=4096,
            description="A signed file link's token (from a `file` event or a listing), for "
            "browsers' <a href> and <img src>; used only when no Authorization header is sent.",
        ),
    ] = None,
) -> Response:
    """The file's bytes: an attachment, with `ETag`, `Range` and `If-None-Match` honoured."""
    cache = request.app.state.token_cache
    reader = await authorize_follower(
        rt, cache, cid=cid, authorization=authorization, token=token, path=path
    )
    logs.bind(conversation_id=cid, user_id=reader.user_id)
    info, data = await rt.files.read(cid, path)  # which checks the path
    return _download(request, info, data)


@router.delete(
    "/{path:path}", status_code=204, responses=documented(InvalidPath, FileNotFound, UnknownPath)
)
async def delete_file(rt: RuntimeDep, conversation: ConversationDep, path: FilePath) -> Response:
    await rt.files.delete(conversation.id, path)
    return Response(status_code=204)


def _file_too_large(limits: Limits) -> WorkspaceFull:
    return WorkspaceFull(
        "The file is over the limit for one file",
        limit=limits.file_bytes,
        setting="TURNSTREAM_WORKSPACE_FILE_BYTES",
    )


async def _read_upload(request: Request, limits: Limits) -> list[NewFile]:
    """The upload's files, named; the whole body read (and bounded) before anything is stored."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise InvalidUpload("Upload files as multipart/form-data, one or more `file` parts.")
    too_large = WorkspaceFull(
        "The upload is larger than the whole workspace may be",
        limit=limits.total_bytes,
        setting="TURNSTREAM_WORKSPACE_BYTES",
    )
    body = capped_stream(request, limits.total_bytes + _ENVELOPE_BYTES, too_large)
    parser = MultiPartParser(request.headers, body, max_files=limits.files + 1, max_fields=10)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if "Too many files" in str(exc):
            raise WorkspaceFull(
                "The upload holds more files than the workspace may",
                limit=limits.files,
                setting="TURNSTREAM_WORKSPACE_FILES",
            ) from exc
        raise InvalidUpload(f"The multipart form could not be read: {exc}") from exc
    try:
        uploads = [u for u in form.getlist("file") if isinstance(u, UploadFile)]
        named = form.get("path")
        if not uploads:
            raise InvalidUpload("The upload has no `file` part.")
        if named is not None and not isinstance(named, str):
            raise InvalidUpload("The `path` field must be text.")
        files = []
        for upload in uploads:
            path = _upload_path(upload, named, single=len(uploads) == 1)
            if upload.size is not None and upload.size > limits.file_bytes:
                raise _file_too_large(limits)
            media = upload.headers.get("content-type")
            files.append(NewFile(path, await upload.read(), media))
        return files
    finally:
        await form.close()


def _upload_path(upload: UploadFile, named: str | None, *, single: bool) -> str:
    """The part's filename, or the `path` field: a folder for several files or when it ends
    in `/`, else the one file's path."""
    if named is not None and named.strip("/") and single and not named.endswith("/"):
        return check_path(named)
    if not upload.filename:
        raise InvalidUpload("A `file` part has no filename; name it with a `path` field.")
    folder = named.rstrip("/") + "/" if named is not None and named.strip("/") else ""
    return check_path(folder + upload.filename)


def _download(request: Request, info: FileInfo, data: bytes) -> Response:
    etag = f'"{info.sha256}"'
    headers = {
        "ETag": etag,
        "Content-Disposition": _attachment(info.path),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "Cache-Control": "private, no-cache",
        "Accept-Ranges": "bytes",
    }
    if etag in _etags(request.headers.get("if-none-match")):
        return Response(status_code=304, headers=headers)
    try:
        span = _range(request.headers.get("range"), len(data))
    except _Unsatisfiable:
        headers["Content-Range"] = f"bytes */{len(data)}"
        return Response(status_code=416, headers=headers)
    if span is None:
        return Response(data, media_type=info.media_type, headers=headers)
    first, last = span
    headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
    return Response(
        data[first : last + 1], status_code=206, media_type=info.media_type, headers=headers
    )


def _attachment(path: str) -> str:
    """`attachment`, with the file's name as ASCII (filename) and as UTF-8 (filename*)."""
    name = path.rsplit("/", 1)[-1]
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


class _Unsatisfiable(Exception):
    """A byte range that lies outside the file (416)."""


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range asked for, (first, last); None for the whole file (no header, or
    one this route does not serve: several ranges, other units); _Unsatisfiable when the
    range lies outside the file."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first_text, sep, last_text = header[len("bytes=") :].strip().partition("-")
    if not sep or not (first_text.isdigit() or last_text.isdigit()):
        return None
    if not first_text:  # the last N bytes
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise _Unsatisfiable
        return max(size - suffix, 0), size - 1
    if not first_text.isdigit() or (last_text and not last_text.isdigit()):
        return None
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if first >= size or last < first:
        raise _Unsatisfiable
    return first, min(last, size - 1)
