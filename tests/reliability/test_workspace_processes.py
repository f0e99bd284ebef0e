"""The workspace across processes: two API processes and a separate worker, on Redis + PostgreSQL.

A file uploaded through one API process is read by the agent's tool on the
worker; a file the tool writes there streams a `file` event whose signed link
downloads it from the other API process, and both processes list the same files.
"""

from __future__ import annotations

import json

import httpx
from sse import parse_sse

CSV = b"month,total\n2026-01,10\n2026-02,12\n2026-03,9\n"


def _tool(client: httpx.Client, base: str, cid: str, name: str, arguments: dict) -> list:
    response = client.post(
        f"{base}/api/v1/conversations/{cid}/message/",
        data={"content": f"/tool {name} {json.dumps(arguments)}"},
    )
    assert response.status_code == 200, response.text
    return parse_sse(response.text)


def test_files_move_between_api_processes_and_the_worker(cluster) -> None:
    deployment = cluster(TURNSTREAM_TOOLS="basic,workspace", TURNSTREAM_DEMO_WORDS="5")
    a, b = (server.url for server in deployment.apis(2))
    deployment.worker()
    with httpx.Client(headers=deployment.token(), timeout=30) as client:
        cid = client.post(f"{a}/api/v1/conversations").json()["id"]
        uploaded = client.post(
            f"{a}/api/v1/conversations/{cid}/files", files={"file": ("data.csv", CSV, "text/csv")}
        )
        assert uploaded.status_code == 201, uploaded.text

        read = _tool(client, b, cid, "read_file", {"path": "data.csv", "limit": 2})
        (result,) = [e.data for e in read if e.event == "tool_result"]
        assert result["isError"] is False
        assert result["content"].startswith("month,total\n2026-01,10\n[lines 1-2 of 4")
        assert read[-1].data["status"] == "completed"

        written = _tool(client, a, cid, "write_file", {"path": "out/report.md", "content": "# hi"})
        (file_event,) = [e.data for e in written if e.event == "file"]
        assert file_event["path"] == "out/report.md" and file_event["version"] == 1
        # The signed link opens the file on the other process, without the bearer token.
        assert httpx.get(f"{b}{file_event['url']}", timeout=10).content == b"# hi"

        for base in (a, b):
            listing = client.get(f"{base}/api/v1/conversations/{cid}/files").json()
            assert [i["path"] for i in listing["items"]] == ["data.csv", "out/report.md"]
        messages = client.get(f"{b}/api/v1/conversations/{cid}/messages").json()["items"]
    first_question = next(m for m in messages if m["role"] == "user")
    assert [f["path"] for f in first_question["files"]] == ["data.csv"]
    assert messages[-1]["files"][0]["path"] == "out/report.md"
