"""A bomb in one run's sandbox leaves another run's stream on time.

Run A's `bash` call is a fork bomb or a memory bomb; while it goes, run B (another
conversation) streams a reply word by word from the same worker. The gaps between
B's events are read from their stream ids, which Redis stamps (milliseconds) as
each event is written: what a client following B would see arrive.
"""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from sse import SSEEvent, parse_sse

BOMBS = {
    "fork": ":(){ :|:& };: ; sleep 4",
    # As much memory as the limits let it hold (two processes under 1 GiB, 2 GiB in all),
    # allocated and then held: tests/security/test_sandbox.py has one killed past them.
    "memory": (
        "for i in 1 2; do "
        "python3 -c 'import time; a = bytearray(900 * 1024**2); time.sleep(4)' & done; wait"
    ),
}
WORD_MS = 50
MOST_GAP_MS = 1000  # 20 times the pace of the words


def _ms(event: SSEEvent) -> int:
    return int(event.id.split("-")[0])


@pytest.mark.parametrize("bomb", sorted(BOMBS))
async def test_a_bomb_in_one_run_leaves_another_runs_stream_on_time(api, bomb: str) -> None:
    overrides = {"tools": "sandbox", "demo_words": 40, "demo_delay_ms": WORD_MS}
    async with api(**overrides) as (http, headers, _):
        a, b = [(await http.post("/api/v1/conversations", headers=headers)).json()["id"]
                for _ in range(2)]  # fmt: skip

        async def send(cid: str, content: str) -> list[SSEEvent]:
            url = f"/api/v1/conversations/{cid}/message/"
            sent = await http.post(url, data={"content": content}, headers=headers)
            assert sent.status_code == 200, sent.text
            return parse_sse(sent.text)

        bombing = asyncio.create_task(send(a, f"/tool bash {json.dumps({'command': BOMBS[bomb]})}"))
        await asyncio.sleep(0.5)  # the bomb is going off
        streamed = await send(b, "tell me something")
        bombed = await bombing

    (result,) = [e for e in bombed if e.event == "tool_result"]
    # B streamed while the bomb went on (on a loaded machine B may finish after it).
    during = [e for e in streamed if e.event == "delta" and _ms(e) < _ms(result)]
    assert streamed[-1].data["status"] == "completed"
    assert len(during) >= 10, f"{len(during)} of B's words came while the bomb went on"
    times = [_ms(e) for e in streamed]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert max(gaps) < MOST_GAP_MS, f"B's events came {max(gaps)} ms apart (words: {WORD_MS} ms)"
