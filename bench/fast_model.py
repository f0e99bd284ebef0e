"""Fast models: what `turnstream serve` and Redis cost a reply of 5,000 deltas (issue 16, item 4).

    flock /tmp/bench.lock python bench/fast_model.py [--deltas 5000] [--rates 1000,0]
        [--repeats 3] [--quick]

The agent (`paced_agent` below) yields `--deltas` text deltas the way a model's stream
delivers them: delta i is due at start + i / rate, and a delta already due is yielded at
once, with no sleep (rate 0: all at once, a burst). Side by side in one run, interleaved
per repeat and rate, the same agent is consumed:

- direct (the baseline): in this process, as a server without turnstream would stream it;
- turnstream: `POST /message/?stream=true` to a real `turnstream serve` (its embedded
  worker, on a real `redis-server`), the client reading the SSE stream over loopback HTTP.

Both clocks start when the request (or the iteration) starts and stop at the agent's last
delta; the table also shows turnstream's time to its first delta and to `end` (which
follows once the reply and the events are stored in SQL). Redis writes are counted with
MONITOR while each turnstream run streams: the commands clients send (not those a Lua
script runs) that write, script calls included, divided by the run's time to `end`; the
stream entries are the XADDs. Every run is checked: the client's assembled text equals
the agent's, `seq` runs 1, 2, 3… with no gap, and the stored reply equals the text too.

Goals (at 1,000 deltas/s, the default first rate; rate 0 is shown for what a burst
costs): overhead (turnstream - direct) / direct ≤ 10 %; ≤ 50 Redis writes per run per
second; no delta lost or reordered. Figures are medians over `--repeats`. Writes
bench/results/fast_model.json. About 1 min (`--quick`: 1,000 deltas, 1 repeat, ~15 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

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

GOALS = {"overhead_max": 0.10, "writes_per_run_second_max": 50.0}
GOAL_RATE = 1000  # deltas/s the goals are judged at
# Commands that change Redis, as a client may send them (MONITOR shows scripts' own apart).
WRITES = {
    *("EVAL", "EVALSHA", "FCALL", "XADD", "PUBLISH", "SET", "SETEX", "HSET", "HMSET"),
    *("HINCRBY", "INCR", "DEL", "UNLINK", "EXPIRE", "PEXPIRE", "ZADD", "ZREM", "LPUSH"),
    *("LTRIM", "XTRIM", "XDEL", "XACK", "XGROUP"),
}
_MONITOR_LINE = re.compile(r'^\+[\d.]+ \[\d+ ([^\]]+)\] "([A-Za-z]+)"')


def parse_request(message: str) -> tuple[int, float]:
    """The deltas and rate a message asks for: "deltas=5000 rate=1000"."""
    fields = dict(part.split("=", 1) for part in message.split())
    return int(fields["deltas"]), float(fields["rate"])


def expected_text(deltas: int) -> str:
    return "".join(f"w{i} " for i in range(deltas))


async def paced_agent(ctx: Any) -> AsyncIterator[str]:  # TURNSTREAM_AGENT=fast_model:paced_agent
    """`deltas` deltas, delta i due at start + i / rate; one already due goes at once."""
    deltas, rate = parse_request(ctx.message)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(deltas):
        if rate:
            wait = start + i / rate - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        yield f"w{i} "


async def direct(message: str) -> float:
    """Time to the agent's last delta, consumed in this process."""
    start = time.perf_counter()
    async for _ in paced_agent(SimpleNamespace(message=message)):
        pass
    return time.perf_counter() - start


class Monitor:
    """Counts the commands clients send Redis (MONITOR), while it is attached."""

    def __init__(self, redis_url: str) -> None:
        self.url = urlsplit(redis_url)
        self.sent: Counter[str] = Counter()  # by command, from clients
        self.scripted: Counter[str] = Counter()  # by command, run by Lua scripts

    async def __aenter__(self) -> Monitor:
        reader, self.writer = await asyncio.open_connection(self.url.hostname, self.url.port)
        self.writer.write(b"MONITOR\r\n")
        await reader.readline()  # +OK
        self.task = asyncio.create_task(self._read(reader))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.05)  # the last lines in flight
        self.task.cancel()
        self.writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            m = _MONITOR_LINE.match(line.decode(errors="replace"))
            if m:
                source, command = m.group(1), m.group(2).upper()
                (self.scripted if source == "lua" else self.sent)[command] += 1

    def writes(self) -> int:
        return sum(n for command, n in self.sent.items() if command in WRITES)


async def through_turnstream(
    client: httpx.AsyncClient, url: str, message: str, redis_url: str
) -> dict[str, Any]:
    """One run through serve, Redis and SSE: timings, Redis commands and integrity."""
    cid = (await client.post(f"{url}/api/v1/conversations")).json()["id"]
    seqs: list[int] = []
    parts: list[str] = []
    first_delta = last_delta = end = None
    async with Monitor(redis_url) as monitor:
        start = time.perf_counter()
        async with client.stream(
            "POST", f"{url}/api/v1/conversations/{cid}/message/?stream=true",
            data={"content": message},
        ) as response:  # fmt: skip
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                seqs.append(event["seq"])
                if event["type"] == "delta":
                    parts.append(event["text"])
                    last_delta = time.perf_counter()
                    first_delta = first_delta or last_delta
                elif event["type"] == "end":
                    end = time.perf_counter()
    if first_delta is None or last_delta is None or end is None:
        raise RuntimeError(f"the run did not stream its deltas (HTTP {response.status_code})")
    stored = (await client.get(f"{url}/api/v1/conversations/{cid}/messages")).json()
    reply = [m for m in stored["items"] if m["role"] == "assistant"][-1]["content"]
    text, wanted = "".join(parts), expected_text(parse_request(message)[0])
    return {
        "s": last_delta - start,
        "first_s": first_delta - start,
        "end_s": end - start,
        "events": len(seqs),
        "deltas_received": len(parts),
        "writes": monitor.writes(),
        "xadd": monitor.scripted["XADD"] + monitor.sent["XADD"],
        "sent": dict(monitor.sent),
        "intact": text == wanted and reply == wanted and seqs == list(range(1, len(seqs) + 1)),
    }


async def measure(args: argparse.Namespace, url: str, token: str, redis_url: str) -> list:
    """Per repeat and rate: direct, then through turnstream (interleaved)."""
    rows = []
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=120, headers=headers) as client:
        await through_turnstream(client, url, "deltas=200 rate=0", redis_url)  # warm-up
        for repeat in range(args.repeats):
            for rate in args.rates:
                message = f"deltas={args.deltas} rate={rate}"
                base = await direct(message)
                ours = await through_turnstream(client, url, message, redis_url)
                rows.append({"repeat": repeat, "rate": rate, "direct_s": base, **ours})
                log(
                    f"repeat {repeat + 1}/{args.repeats} rate {rate}/s: direct {base:.3f} s, "
                    f"turnstream {ours['s']:.3f} s, {ours['writes']} writes, "
                    f"{ours['events']} events, intact {ours['intact']}"
                )
    return rows


def summarise(rows: list[dict[str, Any]], rate: int) -> dict[str, Any]:
    """The medians of one rate's repeats, the ratios, and the goals."""
    mine = [r for r in rows if r["rate"] == rate]
    direct_s = median(r["direct_s"] for r in mine)
    ours_s = median(r["s"] for r in mine)
    assert direct_s is not None and ours_s is not None
    writes_per_s = median(r["writes"] / r["end_s"] for r in mine)
    out = {
        "rate": rate,
        "direct_s": direct_s,
        "turnstream_s": ours_s,
        "turnstream_end_s": median(r["end_s"] for r in mine),
        "turnstream_first_delta_ms": 1000 * (median(r["first_s"] for r in mine) or 0),
        "ratio": ratio(ours_s, direct_s),  # turnstream / direct
        "overhead": (ours_s - direct_s) / direct_s,
        "added_ms": (ours_s - direct_s) * 1000,
        "writes": median(r["writes"] for r in mine),
        "writes_per_run_second": writes_per_s,
        "stream_entries": median(r["xadd"] for r in mine),
        "sse_events": median(r["events"] for r in mine),
        "intact": all(r["intact"] for r in mine),
    }
    if rate == GOAL_RATE:
        out["goals_met"] = {
            "overhead": out["overhead"] <= GOALS["overhead_max"],
            "writes_per_run_second": writes_per_s <= GOALS["writes_per_run_second_max"],
            "no_delta_lost_or_reordered": out["intact"],
        }
    return out


def report(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    results = [summarise(rows, rate) for rate in args.rates]
    print()
    print_table(
        ["deltas/s", "direct s", "turnstream s", "overhead", "to end s", "1st delta ms",
         "writes", "writes/run/s", "entries", "intact"],
        [
            [r["rate"] or "burst", fmt(r["direct_s"], ".3f"), fmt(r["turnstream_s"], ".3f"),
             f"{r['overhead']:.1%}", fmt(r["turnstream_end_s"], ".3f"),
             fmt(r["turnstream_first_delta_ms"]), fmt(r["writes"], ".0f"),
             fmt(r["writes_per_run_second"]), fmt(r["stream_entries"], ".0f"), r["intact"]]
            for r in results
        ],
    )  # fmt: skip
    for r in results:
        if "goals_met" in r:
            met = ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in r["goals_met"].items())
            print(f"goals at {r['rate']} deltas/s: {met}")
    write_results(
        "fast_model",
        {
            "benchmark": "fast_model",
            "parameters": vars(args),
            "goals": {**GOALS, "judged_at_rate": GOAL_RATE},
            "results": results,
            "repeats": rows,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deltas", type=int, default=5000)
    parser.add_argument("--rates", default=f"{GOAL_RATE},0", help="deltas/s; 0: a burst")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1,000 deltas, 1 repeat")
    args = parser.parse_args()
    args.rates = [int(r) for r in args.rates.split(",")]
    if args.quick:
        args.deltas, args.repeats = 1000, 1
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            _redis, redis_url = start_redis(tmp)
            env = turnstream_env(
                tmp, redis_url, agent="fast_model:paced_agent", runs_per_minute="100000"
            )
            token = create_token(env)
            _api, port = serve(tmp, env)
            rows = asyncio.run(measure(args, f"http://127.0.0.1:{port}", token, redis_url))
        finally:
            Proc.stop_all()
    report(args, rows)


if __name__ == "__main__":
    main()
