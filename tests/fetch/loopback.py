"""Loopback doubles for the fetch tests: a scripted HTTP server, a resolver, a transport.

Every connection a fetch test makes goes to 127.0.0.0/8 or ::1, and
`LoopbackTransport` makes sure of it: it records each request it is asked to send
and fails the test, without connecting, for any other address.

    async with serving({"/": answer("<h1>Hi</h1>", content_type="text/html")}) as server:
        page = await fetch(server.url("/"), settings, transport=LoopbackTransport())
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Writes the whole answer (status line, headers, body) to the connection.
Handler = Callable[[asyncio.StreamWriter], Awaitable[None]]


def head(status: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def answer(
    body: str | bytes = b"",
    *,
    status: int = 200,
    content_type: str | None = "text/plain; charset=utf-8",
    headers: Mapping[str, str] | None = None,
) -> Handler:
    data = body.encode("utf-8") if isinstance(body, str) else body
    fields = {"Content-Length": str(len(data)), "Connection": "close", **(headers or {})}
    if content_type is not None:
        fields["Content-Type"] = content_type

    async def write(writer: asyncio.StreamWriter) -> None:
        writer.write(head(status, fields) + data)
        await writer.drain()

    return write


def redirect(location: str, status: int = 302) -> Handler:
    return answer(status=status, content_type=None, headers={"Location": location})


@dataclass
class Request:
    path: str
    headers: dict[str, str]  # names in lower case


@dataclass
class Server:
    routes: Mapping[str, Handler]
    host: str = "127.0.0.1"
    port: int = 0
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    cut_off: list[str] = field(default_factory=list)  # paths whose client left mid-answer
    keep_alive: bool = False  # answer more than one request on a connection
    handlers: set[asyncio.Task[None]] = field(default_factory=set)  # answering now

    def url(self, path: str = "/", host: str | None = None) -> str:
        name = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"http://{name}:{self.port}{path}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while await self._answer(reader, writer) and self.keep_alive:
                pass
        except ConnectionError:
            self.cut_off.append(self.requests[-1].path)
        finally:
            self.handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the client closed the connection instead."""
        try:
            request_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        except asyncio.IncompleteReadError:
            return False
        pairs = [line.split(":", 1) for line in lines if ":" in line]
        path = request_line.split(" ")[1]
        self.requests.append(Request(path, {k.strip().lower(): v.strip() for k, v in pairs}))
        await self.routes.get(path, answer("not here", status=404))(writer)
        return True


@contextlib.asynccontextmanager
async def serving(
    routes: Mapping[str, Handler], host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    """A server on `host` (loopback), on a free port, closed on exit; HTTPS with `tls`."""
    assert ipaddress.ip_address(host).is_loopback, "tests connect to loopback addresses only"
    server = Server(routes, host)
    listener = await asyncio.start_server(server.handle, host, 0, ssl=tls)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        for handler in list(server.handlers):  # a slow answer the test no longer waits for
            handler.cancel()
        listener.close()
        await listener.wait_closed()


class LoopbackTransport(httpx.AsyncBaseTransport):
    """httpx's transport, for loopback addresses only; records every request it is given."""

    def __init__(self, verify: ssl.SSLContext | bool = True) -> None:
        self.requests: list[httpx.Request] = []
        self._inner = httpx.AsyncHTTPTransport(verify=verify)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        address = ipaddress.ip_address(request.url.host)
        assert address.is_loopback, f"a test tried to connect to {address}"
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def connect_nowhere(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace httpx's transport and the system resolver by doubles that record each
    connection or DNS question tried, fail the test, and connect nowhere: for fetches of
    addresses no test may reach (private, link-local, public)."""
    tried: list[str] = []

    async def connect(_self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        tried.append(str(request.url))
        raise AssertionError(f"web_fetch tried to connect to {request.url}")

    def resolve(host: object, *_args: object, **_kwargs: object) -> list[object]:
        tried.append(f"dns:{host}")
        raise AssertionError(f"web_fetch asked DNS for {host}")

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", connect)
    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return tried


class FakeResolver:
    """DNS without DNS: names -> addresses, each question recorded; an unknown name fails."""

    def __init__(self, answers: Mapping[str, Sequence[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str) -> Sequence[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise AssertionError(f"the test's resolver knows no {host}")
        return self.answers[host]


def certificate(name: str, folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext, list[str]]:
    """A self-signed certificate for `name`: the server's TLS context, a client context
    that trusts it, and the list the server fills with the SNI names it is sent."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    names: list[str] = []

    def record(_socket: ssl.SSLObject, sni: str | None, _context: ssl.SSLContext) -> None:
        names.append(sni or "")

    server.sni_callback = record
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client, names
