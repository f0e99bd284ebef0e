"""Turn time against conversation length (issue 29): does a turn's cost grow with the turns?

    python bench/long_conversation.py [--turns 610] [--window 20] [--tree PATH] [--quick]

One `turnstream serve` (in-process worker) on a real `redis-server` and a SQLite file,
the `demo` agent answering at once (TURNSTREAM_DEMO_DELAY_MS=0, its 60 words), and
TURNSTREAM_CONTEXT_TOKENS=32000 (the budget of a model not in the table; the demo has no
model to summarise with, so each compaction stores a note). Each turn posts a
2,000-character message with `stream=true` over HTTP and stops the clock at the `end`
event: what a user waits. Turns follow one another, never two at once.

One conversation is grown to `--turns` less `--window` turns (590); then its last
`--window` turns (591-610) are timed interleaved with turns 11-30 of a young conversation,
so that the machine's other load falls on both alike. Figures: the median wall time of
each, and their ratio (goal ≤ 1.25); also the API process's mean CPU time per turn,
which the machine's other load disturbs less. `--tree PATH`
benches another checkout instead (e.g. `git worktree add /tmp/before <commit>`), for a
before/after on the same machine. Prints a table; writes
bench/results/long_conversation.json (with `--tree`: long_conversation_tree.json).
About two minutes on an idle machine (`--quick`: 200 turns).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from support import (
    Proc,
    create_token,
    fmt,
    log,
    median,
    print_table,
    ratio,
    serve,
    start_redis,
    turnstream_env,
    write_results,
)

GOAL = 1.25
EARLY = range(11, 31)  # the turns around turn 20
WORDS = "turn budget summary stream cursor reply model token history agent".split()


def message(turn: int) -> str:
    """2,000 characters of words, different each turn."""
    rnd = random.Random(turn)
    text = f"Turn {turn}: "
    while len(text) < 2000:
        text += rnd.choice(WORDS) + " "
    return text[:2000]


async def one_turn(client: httpx.AsyncClient, url: str, cid: str, turn: int) -> float:
    start = time.perf_counter()
    async with client.stream(
        "POST", f"{url}/api/v1/conversations/{cid}/message/?stream=true",
        json={"content": message(turn)},
    ) as response:  # fmt: skip
        async for line in response.aiter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["type"] == "end":
                return time.perf_counter() - start
    raise RuntimeError(f"turn {turn}: no end event (HTTP {response.status_code})")


async def measure(url: str, token: str, args: argparse.Namespace, api: Proc) -> dict[str, Any]:
    """Grow the long conversation, then time its last turns interleaved with a young one's."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:
        old, young = [
            (await client.post(f"{url}/api/v1/conversations")).json()["id"] for _ in range(2)
        ]
        for turn in range(1, EARLY.start):
            await one_turn(client, url, young, turn)
        grown = args.turns - args.window
        growing = []
        for turn in range(1, grown + 1):
            growing.append(await one_turn(client, url, old, turn))
            if turn % 100 == 0:
                log(f"long conversation, turn {turn}: {growing[-1] * 1000:.1f} ms")
        early: list[tuple[float, float]] = []
        late: list[tuple[float, float]] = []
        for n in range(args.window):  # a young turn, then an old one, and so on
            for cid, turn, out in ((young, EARLY.start + n, early), (old, grown + 1 + n, late)):
                cpu = api.cpu_seconds()
                wall = await one_turn(client, url, cid, turn)
                out.append((wall, api.cpu_seconds() - cpu))
        for cid, turns in ((old, args.turns), (young, EARLY.start + args.window - 1)):
            page = await client.get(f"{url}/api/v1/conversations/{cid}/messages?limit=1")
            assert page.json()["items"][0]["sequence"] == 2 * turns - 1, "every message stored"
    return {"growing": growing, "early": early, "late": late}


def report(args: argparse.Namespace, measured: dict[str, Any]) -> None:
    early_turns = f"{EARLY.start}-{EARLY.start + args.window - 1}"
    late_turns = f"{args.turns - args.window + 1}-{args.turns}"
    figures = {}
    # Wall time: the median turn. CPU time: the mean (/proc counts it in 10 ms ticks).
    for name, index, middle in (("wall", 0, median), ("cpu", 1, statistics.mean)):
        early = middle(x[index] * 1000 for x in measured["early"])
        late = middle(x[index] * 1000 for x in measured["late"])
        figures[name] = {"early_ms": early, "late_ms": late, "ratio": ratio(late, early)}
    growth = figures["wall"]["ratio"]
    met = growth is not None and growth <= GOAL
    print_table(
        ["median per turn", f"turns {early_turns}", f"turns {late_turns}", "ratio"],
        [
            [
                f"{name} ms" if name == "wall" else "cpu ms (mean)",
                fmt(f["early_ms"]),
                fmt(f["late_ms"]),
                fmt(f["ratio"], ".2f"),
            ]
            for name, f in figures.items()
        ],
    )
    print(f"goal: wall ratio <= {GOAL}: {'met' if met else 'NOT met'}")
    growing = measured["growing"]
    by_hundred = {
        f"{t + 1}-{min(t + 100, len(growing))}": median(x * 1000 for x in growing[t : t + 100])
        for t in range(0, len(growing), 100)
    }
    write_results(
        "long_conversation_tree" if args.tree else "long_conversation",
        {
            "parameters": vars(args) | {"message_chars": 2000, "agent": "demo"},
            "figures": figures,
            "growing_median_ms_by_hundred": by_hundred,
            "turns_ms": {k: measured[k] for k in ("early", "late")},
            "goal": {"wall_ratio_at_most": GOAL, "met": met},
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=610)
    parser.add_argument("--window", type=int, default=20, help="the last turns' median")
    parser.add_argument("--tree", type=Path, help="bench this checkout instead")
    parser.add_argument("--quick", action="store_true", help="200 turns")
    args = parser.parse_args()
    if args.quick:
        args.turns = 200
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            _redis, redis_url = start_redis(tmp)
            env = turnstream_env(
                tmp,
                redis_url,
                runs_per_minute="100000",
                demo_delay_ms="0",
                context_tokens="32000",
            )
            if args.tree:
                env["PYTHONPATH"] = os.pathsep.join([str(args.tree), env["PYTHONPATH"]])
            token = create_token(env)
            api, port = serve(tmp, env)
            measured = asyncio.run(measure(f"http://127.0.0.1:{port}", token, args, api))
        finally:
            Proc.stop_all()
    report(args, measured)


if __name__ == "__main__":
    main()
