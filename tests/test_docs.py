"""The documentation ships with the repository and covers the whole protocol.

- No Markdown link in README.md or docs/*.md leaves the repository (a link
  like `../shared/SPEC.md` is broken in every clone and on every package
  page) or points to a file, or a heading, that does not exist.
- docs/protocol.md names every /api/v1 path of the app's OpenAPI document,
  and has a row in its event table for every event type of
  turnstream/events.py: a route or an event added later fails here until it
  is documented.
- docs/configuration.md has one row per setting of `Settings`, showing its real
  default; docs/architecture.md's module map names every module.
- README.md is the front door: at most 300 lines, and it links every page of docs/.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from turnstream.api.app import API_PREFIX, create_app
from turnstream.config import Settings
from turnstream.events import EventType

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PROTOCOL = ROOT / "docs" / "protocol.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCUMENTS = [README, *PAGES]
README_MAX_LINES = 300

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


def test_the_module_map_names_every_module():
    """docs/architecture.md's "Module map" lists every module, so a newcomer can find each one."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    assert "\n## Module map\n" in text, "docs/architecture.md has no '## Module map' section"
    section = text.split("\n## Module map\n", 1)[1].split("\n## ", 1)[0]
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
    assert missing == [], f"add these to the module map of docs/architecture.md: {missing}"


def test_the_readme_is_a_front_door():
    """README.md stays short: what turnstream is, how to start it, and where to read on."""
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move details to docs/"


def test_the_readme_links_every_page_of_the_docs():
    linked = {
        (README.parent / unquote(target.partition("#")[0])).resolve()
        for target in links(README.read_text(encoding="utf-8"))
        if not _EXTERNAL.match(target)
    }
    assert len(PAGES) >= 10, PAGES  # the pages were found
    assert [page.name for page in PAGES if page not in linked] == []


# --- docs/configuration.md: one row per setting, with its real default ---------------

# | `TURNSTREAM_NAME` | default | meaning |
_SETTING_ROW = re.compile(r"^\|\s*`(TURNSTREAM_[A-Z0-9_]+)`\s*\|([^|\n]*)\|", re.M)
# Stands in for a setting in the default shown for a derived one: `<data_dir>/x.db`.
_PLACEHOLDER = re.compile(r"<([a-z0-9_]+)>")
_SAMPLE_DIR = Path("/turnstream-docs-sample")


def shown(value: Any) -> str:
    """A default as the table shows it: as it would be written in the variable, or "unset"."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # 43200, 15.0: not 43,200 nor 12 * 3600
    return str(value)  # a string or a path, without quotes


def documented_default(cell: str) -> str:
    """The default a table cell states: its leading code span, or its first word."""
    cell = cell.strip()
    span = re.match(r"`([^`]+)`", cell)
    if span:
        return span[1]
    return cell.split(" ", 1)[0].rstrip(",.;:") if cell else ""


def real_default(name: str, field: FieldInfo, documented: str) -> str:
    """The field's default, shown. A default made from other settings (database_url, from
    data_dir) is made with a sample value for each `<setting>` the table names in it."""
    if field.default_factory is None:
        return shown(field.default)
    data = {key: _SAMPLE_DIR / key for key in _PLACEHOLDER.findall(documented)}
    if field.default_factory_takes_validated_data:
        value = field.default_factory(data)  # type: ignore[call-arg]
    else:
        value = field.default_factory()  # type: ignore[call-arg]
    text = shown(value)
    for key, sample in data.items():
        text = text.replace(str(sample), f"<{key}>")
    return text


def settings_table_problems(text: str, fields: Mapping[str, FieldInfo]) -> list[str]:
    """What is wrong with the settings table in `text`, one line each; [] when nothing."""
    rows = _SETTING_ROW.findall(_FENCE.sub("", text))
    counts = Counter(variable for variable, _ in rows)
    by_variable = {f"TURNSTREAM_{name.upper()}": name for name in fields}
    problems = [f"{v}: no row" for v in by_variable if v not in counts]
    problems += [f"{v}: {n} rows" for v, n in counts.items() if n > 1 and v in by_variable]
    for variable, cell in rows:
        name = by_variable.get(variable)
        if name is None:
            problems.append(f"{variable}: no such setting")
            continue
        documented = documented_default(cell)
        unknown = [key for key in _PLACEHOLDER.findall(documented) if key not in fields]
        if unknown:
            problems.append(f"{variable}: no setting {unknown} to stand for in {documented!r}")
            continue
        real = real_default(name, fields[name], documented)
        if documented != real:
            problems.append(f"{variable}: the table says {documented!r}, the default is {real!r}")
    return problems


def test_the_configuration_lists_every_setting_with_its_default():
    text = CONFIGURATION.read_text(encoding="utf-8")
    assert len(_SETTING_ROW.findall(text)) >= 40  # the table was read
    assert settings_table_problems(text, Settings.model_fields) == []


def test_the_settings_checker_catches_what_it_should():
    """The checker itself: a missing, unknown, doubled or wrong row is reported."""

    class Sample(BaseSettings):
        home: Path = Path(".sample")
        url: str = Field(default_factory=lambda data: f"db://{data.get('home', '.')}/x.db")
        ttl: int = 12 * 3600
        wait: float = Field(15.0, ge=0)
        name: str = "demo"
        secret: str | None = None
        public: bool = False
        port: int = 8000

    table = (
        "| variable | default | meaning |\n|---|---|---|\n"
        "| `TURNSTREAM_HOME` | `.sample`, in the current directory | ok |\n"
        "| `TURNSTREAM_URL` | `db://<home>/x.db` | ok: derived |\n"
        "| `TURNSTREAM_TTL` | `43,200` (12 h) | wrong: the format is 43200 |\n"
        "| `TURNSTREAM_WAIT` | `15.0` | ok |\n"
        "| `TURNSTREAM_NAME` | `demo` | ok |\n"
        "| `TURNSTREAM_SECRET` | unset | ok |\n"
        "| `TURNSTREAM_PUBLIC` | `true` | wrong |\n"
        "| `TURNSTREAM_PUBLIC` | `false` | doubled |\n"
        "| `TURNSTREAM_GONE` | `1` | no such setting |\n"
    )
    assert settings_table_problems(table, Sample.model_fields) == [
        "TURNSTREAM_PORT: no row",
        "TURNSTREAM_PUBLIC: 2 rows",
        "TURNSTREAM_TTL: the table says '43,200', the default is '43200'",
        "TURNSTREAM_PUBLIC: the table says 'true', the default is 'false'",
        "TURNSTREAM_GONE: no such setting",
    ]
    wrong_derivation = table.replace("`db://<home>/x.db`", "`db://<home>/y.db`")
    assert "TURNSTREAM_URL: the table says 'db://<home>/y.db', the default is " in "".join(
        settings_table_problems(wrong_derivation, Sample.model_fields)
    )
