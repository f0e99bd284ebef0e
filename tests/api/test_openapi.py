"""/docs can be used (SPEC §6): bearer auth is an OpenAPI security scheme, bodies are described.

Swagger UI and other OpenAPI tools ignore a header parameter named
`Authorization` (OpenAPI 3: it is the security scheme's business), so the
token must be declared as a security scheme for "Authorize" to appear and for
"Try it out" to send it. These tests read the document as such a tool would
and build requests from it alone.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from turnstream.api.schemas import WHITESPACE

API = "/api/v1"
MESSAGE = API + "/conversations/{cid}/message/"
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
MISSING = {"detail": "Missing bearer token: send 'Authorization: Bearer <token>'."}


@pytest.fixture
async def document(client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
async def token(make_token) -> str:
    return (await make_token("alice"))["Authorization"].split(" ", 1)[1]


def _operations(document: dict[str, Any], prefix: str = ""):
    for path, item in document["paths"].items():
        if path.startswith(prefix):
            for method, operation in item.items():
                if method in METHODS:
                    yield method, path, operation


def _bearer_schemes(document: dict[str, Any]) -> set[str]:
    schemes = document.get("components", {}).get("securitySchemes", {})
    return {
        name
        for name, scheme in schemes.items()
        if scheme.get("type") == "http" and scheme.get("scheme", "").lower() == "bearer"
    }


def _try_it_out(document, method: str, path: str, token: str | None, **values) -> dict[str, Any]:
    """The request Swagger UI's "Try it out" sends, built from the document alone.

    `token` is what was entered under "Authorize" (None: nothing). `values`
    fills path and query parameters by name, and `content_type` with `body`
    picks one of the operation's described request bodies.
    """
    operation = document["paths"][path][method]
    headers, query, url = {}, {}, path
    schemes = document["components"]["securitySchemes"]
    for requirement in operation.get("security", []):
        for name in requirement:
            scheme = schemes[name]
            assert scheme["type"] == "http" and scheme["scheme"].lower() == "bearer", scheme
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
    for parameter in operation.get("parameters", []):
        name = parameter["name"]
        if name not in values:
            assert not parameter.get("required"), f"{method} {path}: {name} is required"
            continue
        if parameter["in"] == "path":
            url = url.replace("{" + name + "}", str(values[name]))
        elif parameter["in"] == "query":
            query[name] = values[name]
    request: dict[str, Any] = {"method": method.upper(), "url": url, "params": query}
    content_type = values.get("content_type")
    if content_type is not None:
        described = operation["requestBody"]["content"][content_type]["schema"]
        body = values["body"]
        assert set(described["required"]) <= set(body) <= set(described["properties"])
        if content_type == "application/json":
            request["json"] = body
        elif content_type == "multipart/form-data":
            request["files"] = {k: (None, v) for k, v in body.items()}
        else:
            request["data"] = body
    request["headers"] = headers
    return request


async def test_the_document_declares_an_http_bearer_security_scheme(document):
    assert _bearer_schemes(document), document.get("components", {}).get("securitySchemes")


async def test_every_api_operation_requires_the_bearer_scheme(document):
    bearer = _bearer_schemes(document)
    operations = list(_operations(document, API + "/"))
    assert len(operations) >= 12, operations
    for method, path, operation in operations:
        security = operation.get("security")
        assert security, f"{method} {path} declares no security"
        # Every alternative needs the bearer token; an empty one ({}) would mean "optional".
        for requirement in security:
            assert bearer & set(requirement), f"{method} {path}: {security}"


async def test_health_and_the_docs_need_no_credentials(client, document):
    assert "security" not in document["paths"]["/health"]["get"]
    assert "security" not in document  # no global requirement either
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "/openapi.json" in docs.text


async def test_no_operation_declares_an_authorization_header_parameter(document):
    for method, path, operation in _operations(document):
        for parameter in operation.get("parameters", []):
            assert not (
                parameter["in"] == "header" and parameter["name"].lower() == "authorization"
            ), f"{method} {path} declares the Authorization header as a parameter"


async def test_resume_still_documents_the_stream_token_query_parameter(document):
    operation = document["paths"][API + "/conversations/{cid}/resume/{session_id}"]["get"]
    names = {(p["in"], p["name"]) for p in operation["parameters"]}
    assert ("query", "token") in names
    assert ("query", "cursor") in names


async def test_the_message_body_is_described_as_json_and_as_forms(document):
    body = document["paths"][MESSAGE]["post"]["requestBody"]
    assert body["required"] is True
    content = body["content"]
    for media_type in (
        "application/json",
        "multipart/form-data",
        "application/x-www-form-urlencoded",
    ):
        schema = content[media_type]["schema"]
        assert schema["type"] == "object", media_type
        assert schema["properties"]["content"]["type"] == "string", media_type
        assert schema["required"] == ["content"], media_type


async def test_try_it_out_creates_a_conversation_with_the_authorized_token(client, document, token):
    request = _try_it_out(document, "post", API + "/conversations", token)
    response = await client.request(**request)
    assert response.status_code == 201, response.text
    assert response.json()["user_id"] == "alice"
    listed = await client.request(**_try_it_out(document, "get", API + "/conversations", token))
    assert listed.status_code == 200, listed.text
    assert listed.json()["total"] == 1


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "multipart/form-data", "application/x-www-form-urlencoded"],
)
async def test_try_it_out_posts_a_message_in_each_described_body(
    client, document, token, content_type
):
    created = await client.request(**_try_it_out(document, "post", API + "/conversations", token))
    cid = created.json()["id"]
    request = _try_it_out(
        document,
        "post",
        MESSAGE,
        token,
        cid=cid,
        stream="false",
        content_type=content_type,
        body={"content": f"hello as {content_type}"},
    )
    response = await client.request(**request)
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "assistant"
    messages = await client.request(
        **_try_it_out(document, "get", API + "/conversations/{cid}/messages", token, cid=cid)
    )
    items = messages.json()["items"]
    assert [m["role"] for m in items] == ["user", "assistant"]
    assert items[0]["content"] == f"hello as {content_type}"


async def test_without_authorize_try_it_out_gets_the_same_401_as_before(client, document):
    request = _try_it_out(document, "post", API + "/conversations", None)
    assert request["headers"] == {}
    response = await client.request(**request)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == MISSING
    basic = await client.get(API + "/conversations", headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401
    assert basic.headers["www-authenticate"] == "Bearer"
    assert basic.json() == MISSING


async def test_blank_in_the_documents_patterns_is_what_the_routes_strip(document):
    """`\\s` differs between Python and ECMAScript: the patterns spell blank out, as
    str.strip() has it, so a text a client's validator calls blank the route does too."""
    blank = re.compile(f"[{WHITESPACE}]")
    assert [c for c in range(0x10000) if bool(blank.fullmatch(chr(c))) != chr(c).isspace()] == []
    body = document["paths"][MESSAGE]["post"]["requestBody"]["content"]
    assert WHITESPACE in body["application/json"]["schema"]["properties"]["content"]["pattern"]
    chat = document["paths"][API + "/chat"]["post"]["requestBody"]["content"]["application/json"]
    user_message = chat["schema"]["properties"]["messages"]["items"]["anyOf"][1]
    assert (
        WHITESPACE
        in user_message["properties"]["parts"]["contains"]["properties"]["text"]["pattern"]
    )
