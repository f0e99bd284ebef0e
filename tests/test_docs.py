"""The documentation ships with the repository and covers the whole protocol.

- No Markdown link in README.md or docs/*.md leaves the repository (a link
  like `../shared/SPEC.md` is broken in every clone and on every package
  page) or points to a file, or a heading, that does not exist.
- docs/protocol.md names every /api/v1 path of the app's OpenAPI document,
  and has a row in its event table for every event type of
  turnstream/events.py: a route or an event added later fails here until it
  is documented.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from turnstream.api.app import API_PREFIX, create_app
from turnstream.config import Settings
from turnstream.events import EventType

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "docs" / "protocol.md"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.S | re.M)
_CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
# [text](target "title") and ![alt](target); the target may sit in <...>.
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*(<[^>]*>|[^)\s]*)[^)]*\)")
# [label]: target
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.M)
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # https:, mailto:, …


def _prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where nothing is a link."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
    prose = _prose(text)
    targets = _INLINE_LINK.findall(prose) + _REFERENCE.findall(prose)
    return [t.removeprefix("<").removesuffix(">") for t in targets]


def anchors(text: str) -> set[str]:
    """The ids GitHub gives the document's headings (lowercase, punctuation dropped, -N)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(document: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in links(document.read_text(encoding="utf-8")):
        if _EXTERNAL.match(target) or target.startswith("//"):
            continue  # a web address: not this test's business
        path, _, fragment = target.partition("#")
        if path.startswith("/"):
            problems.append(f"{target}: an absolute path, which is broken outside one host")
            continue
        resolved = (document.parent / unquote(path)).resolve() if path else document
        if not resolved.is_relative_to(root):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md":
            if unquote(fragment) not in anchors(resolved.read_text(encoding="utf-8")):
                problems.append(f"{target}: no heading #{fragment} in {resolved.name}")
    return problems


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_link_leaves_the_repository_or_points_nowhere(document: Path) -> None:
    assert document.exists()
    assert broken_links(document) == []


def test_the_link_checker_catches_what_it_should(tmp_path: Path) -> None:
    """The checker itself: each kind of bad link is reported, good ones are not."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# A `code` heading: here\n\n## Twice\n## Twice\n")
    sample = tmp_path / "docs" / "sample.md"
    sample.write_text(
        "[up](../../outside.md) [gone](missing.md) [abs](/etc/passwd) [ok](other.md)\n"
        "[web](https://example.com/x) [anchor](other.md#a-code-heading-here) "
        "[second](other.md#twice-1) [bad anchor](other.md#nope) ![img](pic.png)\n"
        "`[not a link](nowhere.md)`\n\n```md\n[nor this](nowhere.md)\n```\n"
        "[ref]: ../../ref.md\n"
    )
    reported = [p.split(":")[0] for p in broken_links(sample, root=tmp_path)]
    assert reported == [
        "../../outside.md",
        "missing.md",
        "/etc/passwd",
        "other.md#nope",
        "pic.png",
        "../../ref.md",
    ]


def test_the_protocol_names_every_api_path(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"))
    paths = [p for p in app.openapi()["paths"] if p.startswith(API_PREFIX + "/")]
    assert len(paths) >= 10, paths  # the document was read, not an empty one
    text = PROTOCOL.read_text(encoding="utf-8")
    assert [p for p in paths if p not in text] == []


def test_the_protocol_has_an_event_table_row_for_every_event_type() -> None:
    text = PROTOCOL.read_text(encoding="utf-8")
    section = re.search(r"^### Event types\n(.*?)^#", text, re.S | re.M)
    assert section is not None, "docs/protocol.md has no '### Event types' section"
    rows = re.findall(r"^\| `([a-z_]+)` \|", section.group(1), re.M)
    assert [e.value for e in EventType if e.value not in rows] == []


def test_the_readme_map_names_every_module():
    """README's "How it works" lists every module, so a newcomer can find each one there."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## How it works", 1)[1].split("\n## ", 1)[0]
    package = ROOT / "turnstream"
    paths = [
        path
        for pattern in ("*.py", "*.lua", "*.js", "*.html", "*.css")
        for path in package.rglob(pattern)
        if "migrations" not in path.parts and path.name != "__init__.py"
    ]
    # The Lua scripts are listed by their names alone ("create, claim, append, ...").
    missing = sorted(
        path.name
        for path in paths
        if path.name not in section and not (path.suffix == ".lua" and path.stem in section)
    )
    assert missing == [], f"add these to README's 'How it works': {missing}"
