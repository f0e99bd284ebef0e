"""turnstream.client's public API: `__all__` is exactly what it exports, and it stands alone."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import typing

import turnstream.client
from turnstream.client import AsyncClient, Client, errors


def test_all_is_every_public_name_and_nothing_else():
    exported = set(turnstream.client.__all__)
    public = {
        name
        for name, value in vars(turnstream.client).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert exported == public
    assert list(turnstream.client.__all__) == sorted(exported)
    for name in exported:
        assert getattr(turnstream.client, name).__module__.startswith("turnstream.client.")


def test_every_type_a_client_method_takes_or_returns_is_exported():
    exported = {getattr(turnstream.client, name) for name in turnstream.client.__all__}
    for cls in (Client, AsyncClient):
        for name, method in _public_methods(cls).items():
            for hint in typing.get_type_hints(method).values():
                for part in _flatten(hint):
                    if getattr(part, "__module__", "").startswith("turnstream.client"):
                        assert part in exported, f"{cls.__name__}.{name} uses {part}"


def test_every_type_an_exported_answer_holds_and_every_exception_is_exported():
    """`Event.file` is a `FileChange`, `FileList.items` `FileEntry`s, …: whatever an answer
    leads to can be named; and each exception errors.py raises can be caught by name."""
    exported = {getattr(turnstream.client, name) for name in turnstream.client.__all__}
    for answer in filter(dataclasses.is_dataclass, exported):
        hints = list(typing.get_type_hints(answer).values())
        for value in vars(answer).values():
            if isinstance(value, property) and value.fget is not None:
                hints.append(typing.get_type_hints(value.fget)["return"])
        for part in (part for hint in hints for part in _flatten(hint)):
            if getattr(part, "__module__", "").startswith("turnstream.client"):
                assert part in exported, f"{answer.__name__} holds {part}"
    raised = {
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, errors.ClientError)
    }
    assert {"FileNotFound", "InvalidPath", "WorkspaceFull"} <= {e.__name__ for e in raised}
    assert raised <= exported


def test_the_async_client_mirrors_the_sync_one():
    sync_methods, async_methods = _public_methods(Client), _public_methods(AsyncClient)
    assert set(async_methods) - {"aclose"} == set(sync_methods) - {"close"}
    for name, method in sync_methods.items():
        if name != "close":
            sync_signature = inspect.signature(method).parameters
            assert list(inspect.signature(async_methods[name]).parameters) == list(sync_signature)


def test_importing_the_client_loads_no_server_code():
    server_side = ("api", "runs", "live", "store", "runtime", "agents", "embedded", "cli")
    code = (
        "import sys, turnstream.client\n"
        f"bad = [m for m in sys.modules if m.split('.')[1:2] and m.split('.')[1] in {server_side}"
        " and m.startswith('turnstream.')]\n"
        "bad += [m for m in ('fastapi', 'redis', 'sqlalchemy', 'uvicorn') if m in sys.modules]\n"
        "print(bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _public_methods(cls: type) -> dict[str, typing.Any]:
    return {
        name: value
        for name, value in vars(cls).items()
        if callable(value) and not name.startswith("_")
    }


def _flatten(hint: object) -> list[object]:
    return [hint, *(part for arg in typing.get_args(hint) for part in _flatten(arg))]
