"""Ending a run conditionally from a stale read: the run ended and a regenerate replaced its
reply meanwhile; the late end stores nothing and changes nothing (runs/ending.py)."""

from __future__ import annotations

import dataclasses

from turnstream.keys import RunKeys
from turnstream.live.status import RunStatus
from turnstream.runs.ending import end_run
from turnstream.runs.reply import Reply

API = "/api/v1/conversations"


async def test_a_late_conditional_end_of_a_replaced_run_stores_no_stale_reply(
    app, client, alice, cid
) -> None:
    rt = app.state.runtime
    first = await client.post(
        f"{API}/{cid}/message/?stream=false", headers=alice, data={"content": "hello"}
    )
    first_sid = first.headers["x-session-id"]
    # What a stop read while the first run was still queued: the record as it was then.
    stale = dataclasses.replace(await rt.runs.get(RunKeys(cid, first_sid)), status=RunStatus.QUEUED)
    again = await client.post(f"{API}/{cid}/regenerate?stream=false", headers=alice)
    assert again.status_code == 200, again.text
    before = (await client.get(f"{API}/{cid}/messages", headers=alice)).json()["items"]
    assert [m["role"] for m in before] == ["user", "assistant"]

    ended = await end_run(
        rt,
        RunKeys(cid, first_sid),
        stale,
        RunStatus.CANCELLED,
        Reply(),
        require=RunStatus.QUEUED,
    )

    assert ended is False
    after = (await client.get(f"{API}/{cid}/messages", headers=alice)).json()["items"]
    assert after == before  # no empty "cancelled" reply of the first run after the new one
    assert (await rt.runs.get(RunKeys(cid, first_sid))).status is RunStatus.COMPLETED
