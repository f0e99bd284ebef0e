"""Tool schemas derived from signatures: type hints, defaults and docstrings."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from turnstream.agents.tools import (
    Tool,
    ToolArgumentsError,
    ToolContext,
    make_tool,
    tools_by_name,
)
from turnstream.errors import Misconfigured


def search(query: str, limit: int = 5, tags: list[str] | None = None) -> list[str]:
    """Search the user's notes
    by words.

    Matches are ranked by recency; this paragraph is not the description.

    Args:
        query: the words to look for; every word
            must appear.
        limit (int): at most this many notes.

    Returns:
        the notes' titles.
    """
    return []


def test_google_docstring_and_hints_make_the_schema() -> None:
    tool = make_tool(search)

    assert tool.name == "search"
    assert tool.description == "Search the user's notes by words."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "query": {
                "type": "string",
                "description": "the words to look for; every word must appear.",
            },
            "limit": {"type": "integer", "default": 5, "description": "at most this many notes."},
            "tags": {
                "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                "default": None,
            },
        },
        "required": ["query"],
        "additionalProperties": False,
    }
    assert tool.openai_schema() == {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the user's notes by words.",
            "parameters": tool.parameters,
        },
    }


def test_sphinx_docstring_and_annotated_fields() -> None:
    def convert(
        amount: Annotated[float, Field(gt=0)],
        currency: Literal["EUR", "USD"] = "EUR",
        note: Annotated[str, Field(description="free text", max_length=20)] = "",
    ) -> str:
        """Convert money.

        :param amount: how much,
            in cents.
        :param str currency: the target currency.
        """
        return ""

    properties = make_tool(convert).parameters["properties"]

    assert properties["amount"] == {
        "type": "number",
        "exclusiveMinimum": 0,
        "description": "how much, in cents.",
    }
    assert properties["currency"] == {
        "type": "string",
        "enum": ["EUR", "USD"],
        "default": "EUR",
        "description": "the target currency.",
    }
    assert properties["note"] == {
        "type": "string",
        "maxLength": 20,
        "default": "",
        "description": "free text",
    }


class Place(BaseModel):
    city: str
    country: str = "FR"


def test_a_model_parameter_is_validated_into_the_model() -> None:
    def visit(place: Place, days: int) -> str:
        """Plan a visit."""
        return ""

    tool = make_tool(visit)
    schema = tool.parameters

    assert schema["properties"]["place"] == {"$ref": "#/$defs/Place"}
    assert schema["$defs"]["Place"]["required"] == ["city"]
    assert tool.parse('{"place": {"city": "Lyon"}, "days": "3"}') == {
        "place": Place(city="Lyon", country="FR"),
        "days": 3,
    }


def test_the_tool_context_is_injected_not_described() -> None:
    def scoped(topic: str, ctx: ToolContext) -> str:
        """Scoped to the caller."""
        return ""

    def maybe(ctx: ToolContext | None = None) -> str:
        """Context optional."""
        return ""

    tool = make_tool(scoped)
    assert tool.context_parameter == "ctx"
    assert list(tool.parameters["properties"]) == ["topic"]
    assert tool.parameters["required"] == ["topic"]
    assert make_tool(maybe).context_parameter == "ctx"
    assert make_tool(maybe).parameters["properties"] == {}
    assert make_tool(search).context_parameter is None


def test_parameter_names_that_pydantic_reserves_still_work() -> None:
    def odd(json: str, schema: int, model_config: bool = False) -> str:
        """Names BaseModel has as attributes."""
        return ""

    tool = make_tool(odd)

    assert list(tool.parameters["properties"]) == ["json", "schema", "model_config"]
    assert tool.parse('{"json": "j", "schema": 2}') == {
        "json": "j",
        "schema": 2,
        "model_config": False,
    }


def test_a_function_without_parameters_or_docstring() -> None:
    def ping() -> str:
        return "pong"

    tool = make_tool(ping)

    assert tool.description == ""
    assert tool.parameters == {"type": "object", "properties": {}, "additionalProperties": False}
    assert tool.parse("") == {} == tool.parse("{}")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("not json", "not valid JSON"),
        ('"a string"', "one JSON object"),
        ('{"limit": 2}', "query: Field required"),
        ('{"query": "x", "limit": "many"}', "limit: Input should be a valid integer"),
        ('{"query": "x", "extra": 1}', "extra: Extra inputs are not permitted"),
    ],
)
def test_parse_refuses_bad_arguments_with_a_message_for_the_model(
    arguments: str, message: str
) -> None:
    with pytest.raises(ToolArgumentsError, match=message) as info:
        make_tool(search).parse(arguments)

    assert "https://" not in str(info.value)  # no pydantic documentation links


def test_unusable_signatures_and_names_are_refused() -> None:
    def variadic(*names: str) -> str:
        """Takes *args."""
        return ""

    def by_position(x: int, /) -> int:
        """Positional-only."""
        return x

    for function in (variadic, by_position):
        with pytest.raises(Misconfigured, match="passed by keyword"):
            make_tool(function)
    with pytest.raises(Misconfigured, match="Tool name"):
        make_tool(search, name="has spaces")


def test_a_ready_tool_keeps_its_name_in_a_registry() -> None:
    renamed = make_tool(search, name="find_notes")

    tools: dict[str, Tool] = tools_by_name([renamed, search])

    assert list(tools) == ["find_notes", "search"]
    assert tools["find_notes"].function is search


def test_a_type_pydantic_cannot_describe_is_a_configuration_error() -> None:
    class Opaque:
        pass

    def takes_opaque(thing: Opaque) -> str:
        """Takes something no JSON schema describes."""
        return ""

    with pytest.raises(Misconfigured, match="takes_opaque: no schema can be made"):
        make_tool(takes_opaque)
