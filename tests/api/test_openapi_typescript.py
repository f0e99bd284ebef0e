"""A TypeScript client generated from the OpenAPI document type-checks a small program.

openapi-typescript (tests/node/, pinned) turns the app's `/openapi.json` into
types, and `tsc --noEmit --strict` checks tests/node/client.ts against them: it
creates a conversation, sends a message and handles both 409s and a 429. As in
tests/api/test_chat_ai_sdk.py: without node this test skips, saying so; with
node but without tests/node's packages it fails, saying how to install them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from turnstream.api.app import create_app

NODE_TESTS = Path(__file__).resolve().parent.parent / "node"
GENERATOR = NODE_TESTS / "node_modules" / "openapi-typescript" / "bin" / "cli.js"
TSC = NODE_TESTS / "node_modules" / "typescript" / "bin" / "tsc"


def test_a_generated_typescript_client_type_checks_a_program(settings, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the generated-client test needs Node 20 or newer")
    if not (GENERATOR.is_file() and TSC.is_file()):
        pytest.fail(
            f"openapi-typescript and typescript are not installed: run `npm ci --no-audit "
            f"--no-fund` in {NODE_TESTS} (scripts/test does that)"
        )
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(create_app(settings).openapi()), encoding="utf-8")
    shutil.copy(NODE_TESTS / "client.ts", tmp_path / "client.ts")
    _run(node, str(GENERATOR), str(document), "--output", str(tmp_path / "api.d.ts"))
    flags = ["--strict", "--target", "es2022", "--module", "nodenext", "--lib", "es2022,dom"]
    _run(node, str(TSC), "--noEmit", *flags, str(tmp_path / "client.ts"))


def _run(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=NODE_TESTS)
    assert result.returncode == 0, f"{args[1]}:\n{result.stdout}\n{result.stderr}"
