"""TURNSTREAM_MCP_CONFIG's file, the names MCP tools get, and what a result becomes: no server
is started here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp.types import (
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ResourceLink,
    TextContent,
    TextResourceContents,
)

from turnstream.agents.tools import AnyArguments, Tool, ToolArgumentsError
from turnstream.mcp.catalog import result_text
from turnstream.mcp.names import tool_name
from turnstream.mcp.servers import Http, ServerSpec, Stdio, config_problems, read_config


def test_the_claude_desktop_format_with_variables_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEARCH_TOKEN", "s3cret")
    monkeypatch.setenv("EMPTY", "")
    monkeypatch.delenv("UNSET", raising=False)
    servers = {
        "files": {
            "command": "npx",
            "args": ["-y", "server-filesystem", "${ROOT:-/srv}"],
            "env": {"LEVEL": "${EMPTY:-warn}"},
            "disabled": False,  # another client's key: ignored
        },
        "search": {
            "type": "http",
            "url": "https://mcp.example.com/mcp",
            "headers": {"Authorization": "Bearer ${SEARCH_TOKEN}"},
        },
        "plain": {"type": "streamable-http", "url": "http://127.0.0.1:9/mcp"},
    }
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": servers}))

    assert read_config(path) == [
        ServerSpec("files", Stdio("npx", ("-y", "server-filesystem", "/srv"), {"LEVEL": "warn"})),
        ServerSpec(
            "search",
            Http("https://mcp.example.com/mcp", {"Authorization": "Bearer s3cret"}),
        ),
        ServerSpec("plain", Http("http://127.0.0.1:9/mcp")),
    ]
    assert config_problems(path) == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"mcpServers": {\n  "a": {"command": "x"},\n}}', "it is not valid JSON "
         "(Expecting property name enclosed in double quotes at line 3, column 1)"),
        ('["a"]', 'it must be a JSON object {"mcpServers": {"NAME": {…}, …}}'),
        ('{"servers": {}}', 'it must be a JSON object {"mcpServers": {"NAME": {…}, …}}'),
        ('{"mcpServers": {"a": {"args": ["x"]}}}',
         'server \'a\': give "command" (a program run over stdio) or "url" (HTTP)'),
        ('{"mcpServers": {"a": {"command": "x", "url": "http://h/"}}}',
         'server \'a\': give "command" (a program run over stdio) or "url" (HTTP)'),
        ('{"mcpServers": {"a": {"type": "sse", "url": "http://h/sse"}}}',
         "server 'a': the SSE transport is not supported; use Streamable HTTP"),
        ('{"mcpServers": {"a": {"type": "ws", "url": "ws://h/"}}}',
         "server 'a': unknown type 'ws'; use stdio, http or streamable-http"),
        ('{"mcpServers": {"a": {"type": "http", "command": "x"}}}',
         "server 'a': type 'http' needs \"url\""),
        ('{"mcpServers": {"a": {"command": "x", "args": "-v"}}}',
         "server 'a': \"args\" must be a list of strings"),
        ('{"mcpServers": {"a": {"url": "h/mcp"}}}',
         "server 'a': url 'h/mcp' is not an http:// or https:// URL"),
        ('{"mcpServers": {"a": {"url": "http://h/", "headers": {"K": "${UNSET}${UNSET}"}}}}',
         "server 'a': ${UNSET}: unset in the environment, with no :-default"),
    ],
)  # fmt: skip
def test_each_problem_is_a_line_naming_the_variable_and_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, problem: str
) -> None:
    monkeypatch.delenv("UNSET", raising=False)
    path = tmp_path / "mcp.json"
    path.write_text(text)

    assert config_problems(path) == [f"TURNSTREAM_MCP_CONFIG={path}: {problem}."]


def test_every_broken_server_is_a_line_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text('{"mcpServers": {"a": {}, "b": {"command": "ok"}, "c": 3}}')

    servers = [line.split(": ", 2)[1] for line in config_problems(path)]
    assert servers == ["server 'a'", "server 'c'"]


def test_names_fit_what_openai_takes() -> None:
    assert tool_name("test", "echo", set()) == "mcp__test__echo"
    assert tool_name("my.files", "read/dir", set()) == "mcp__my_files__read_dir"
    long = tool_name("server", "t" * 80, set())
    assert len(long) == 64 and long.startswith("mcp__server__ttt")
    assert long == tool_name("server", "t" * 80, set())  # the same in every process
    assert long != tool_name("server", "t" * 81, set())
    taken = tool_name("a.b", "c", {"mcp__a_b__c"})
    assert taken.startswith("mcp__a_b__c_") and len(taken) == len("mcp__a_b__c_") + 8


def test_an_mcp_tools_arguments_pass_whole_to_its_server() -> None:
    tool = Tool("t", "", {"type": "object"}, lambda **kw: kw, AnyArguments)

    assert tool.parse('{"path": "a", "options": {"depth": [1, 2]}}') == {
        "path": "a",
        "options": {"depth": [1, 2]},
    }
    assert tool.parse("") == {}
    with pytest.raises(ToolArgumentsError, match="one JSON object"):
        tool.parse("[1]")


def test_a_result_is_text_with_a_note_for_what_is_not() -> None:
    text = TextResourceContents(uri="file:///a.md", mime_type="text/markdown", text="# A")
    blob = BlobResourceContents(uri="file:///b.bin", blob="AAAA")
    result = CallToolResult(
        content=[
            TextContent(text="first"),
            EmbeddedResource(resource=text),
            EmbeddedResource(resource=blob),
            ResourceLink(uri="file:///c.txt", name="c"),
        ]
    )

    assert result_text(result).split("\n") == [
        "first",
        "# A",
        "[binary resource file:///b.bin: not shown]",
        "[resource link: file:///c.txt]",
    ]
    structured = CallToolResult(content=[], structured_content={"temperature": 21})
    assert result_text(structured) == '{"temperature": 21}'
