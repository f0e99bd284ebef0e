"""Workspace paths: the one check every route and tool applies before a path is used.

A workspace path is relative and `/`-separated, with at most 255 bytes (UTF-8)
a segment and 1,024 in all. No segment is empty, `.` or `..`; no character is
NUL, another control character or a backslash; the path does not begin with
`/` or `~`. A path that breaks a rule is refused whole, never "cleaned" into
another one. Names are kept in Unicode NFC, as macOS and the web platform
compose them: a name sent in another normalization form (a decomposed `é`) is
canonically the same name, so it names the same file, and the checks apply to
its NFC form.

Paths are only ever keys of rows in the database, never joined to a directory
on disk here; the sandbox that materialises a workspace (later) relies on the
same rules to stay inside its directory.
"""

from __future__ import annotations

import unicodedata

from turnstream.errors import InvalidPath

MAX_SEGMENT_BYTES = 255
MAX_PATH_BYTES = 1024


def check_path(path: str) -> str:
    """`path` in NFC if it is a valid workspace path; InvalidPath saying why otherwise."""
    path = unicodedata.normalize("NFC", path)
    if not path:
        raise InvalidPath(path, "it is empty")
    if path.startswith(("/", "~")):
        raise InvalidPath(path, "it must be relative (no leading / or ~)")
    for char in path:
        if char == "\\":
            raise InvalidPath(path, "it holds a backslash; separate folders with /")
        if unicodedata.category(char) in ("Cc", "Cs") or char in "\u2028\u2029":
            raise InvalidPath(path, "it holds a control character")
    encoded = path.encode("utf-8")
    if len(encoded) > MAX_PATH_BYTES:
        raise InvalidPath(path, f"it is longer than {MAX_PATH_BYTES} bytes")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidPath(path, "it has an empty, '.' or '..' segment")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidPath(path, f"a segment is longer than {MAX_SEGMENT_BYTES} bytes")
    return path


def check_prefix(prefix: str) -> str:
    """A listing prefix in NFC: empty (everything) or a path, optionally ending in `/`."""
    if prefix in ("", "."):
        return ""
    folder = prefix.removesuffix("/")
    return check_path(folder) + prefix[len(folder) :]


def parents(path: str) -> list[str]:
    """The folders above `path`: `a/b/c` -> [`a`, `a/b`]."""
    segments = path.split("/")
    return ["/".join(segments[:i]) for i in range(1, len(segments))]
