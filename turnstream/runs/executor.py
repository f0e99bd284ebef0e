"""Executing one run: claim it, stream the agent's events into Redis, store them, end it.

The shape of an execution:

    claim (queued -> running, atomically)
    consume loop: agent events -> buffer -> one Redis write per ~20 ms (deltas merged)
    watcher beside it: renews the lease, notices a stop, cancels the agent's step
    store the run's messages and events in SQL (reply.py, archiver.py), then end the run
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator

from redis.exceptions import RedisError

from turnstream import metrics
from turnstream.agents.base import AgentEvent, RunContext
from turnstream.events import Event, EventType, delta
from turnstream.keys import RunKeys
from turnstream.live.record import RunRecord
from turnstream.live.status import RunStatus
from turnstream.runs import archiver
from turnstream.runs.reply import Reply
from turnstream.runtime import Runtime
from turnstream.store.views import NewMessage

logger = logging.getLogger("turnstream.runs")


async def execute(rt: Runtime, cid: str, sid: str, *, worker: str) -> None:
    """Run the run `sid` if it is still queued; a no-op for one that ran or ended already."""
    k = RunKeys(cid, sid)
    record = await rt.runs.get(k)
    if record is None:
        logger.warning("run %s expired before a worker took it", sid)
        return
    if record.multitask_after:
        await rt.runs.wait_ended(RunKeys(cid, record.multitask_after))
    if not await rt.runs.claim(k, worker=worker, lease_seconds=rt.settings.lease_seconds):
        logger.info("run %s is %s already: not running it again", sid, record.status)
        return
    task = asyncio.current_task()
    assert task is not None
    rt.running.add(task)
    try:
        await _Execution(rt, k, record, worker).run()
    finally:
        rt.running.discard(task)


async def end_run(
    rt: Runtime,
    k: RunKeys,
    record: RunRecord,
    status: RunStatus,
    reply: Reply,
    *,
    error: tuple[str, str] | None = None,
    require: RunStatus | None = None,
    lapsed_before: int = 0,
) -> bool:
    """Store the run's messages, usage and events, then end it: whoever sees `end` has them.

    Returns False when the run had ended already (another actor won). A
    conditional end (`require`: the reaper, or a stop before any worker) never
    replaces messages already stored: the worker that wrote them knew more.
    """
    await rt.store.save_run(
        cid=k.cid,
        session_id=k.sid,
        messages=reply.messages(status, message_id=record.message_id, session_id=k.sid),
        keep_existing=require is not None,
    )
    if reply.prompt_tokens or reply.completion_tokens:
        await rt.store.record_usage(
            cid=k.cid,
            session_id=k.sid,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
        )
    await archiver.save(rt, k)  # its events so far, into SQL before the end like the reply
    ended_at = await rt.runs.finish(
        k,
        status=status,
        message_id=record.message_id,
        error=error,
        require=require,
        lapsed_before=lapsed_before,
    )
    if ended_at is None:
        return False
    metrics.run_ended(status.value, created_at_ms=record.created_at, ended_at_ms=ended_at)
    await archiver.save_end(rt, k, status, error, ended_at)  # `error`/`end`, and the run log
    return True


class _Execution:
    """One run on this worker: a consume loop that also flushes, and a watcher beside it.

    Nothing here cancels a task that may be writing to Redis: a stop cancels only
    the agent's pending step, and the watcher is told to finish, so a batch of
    events is never half-sent.
    """

    def __init__(self, rt: Runtime, k: RunKeys, record: RunRecord, worker: str) -> None:
        self.rt = rt
        self.k = k
        self.record = record
        self.worker = worker
        self.reply = Reply()
        self.buffer: list[Event] = []
        # The batch being sent, kept with its number until Redis has taken it.
        self.unsent: list[Event] = []
        self.batches = 0
        self.unreachable_since: float | None = None
        self.last_write = 0.0
        self.stop_asked = False
        self.lost = False
        # (message, code) of an `error` the agent yielded: it ends the run as `error`.
        self.agent_error: tuple[str, str] | None = None
        self.finished = asyncio.Event()
        self.step: asyncio.Future[AgentEvent] | None = None
        self.archiving = archiver.KeepUp(rt, k)  # what a trim waits to drop, into SQL

    async def run(self) -> None:
        status, error = RunStatus.COMPLETED, None
        watcher = asyncio.create_task(self._watcher())
        try:
            ctx = await self._context()  # stores an enqueued run's question, in its turn
            if await self.rt.redis.exists(self.k.cancel):
                self.stop_asked = True  # stopped while it waited for its turn: no agent
            await self._consume(ctx)
            if self.stop_asked:
                status = RunStatus.CANCELLED
            elif self.agent_error is not None:
                status, error = RunStatus.ERROR, self.agent_error
        except asyncio.CancelledError:
            # The worker itself is shutting down: end the run rather than leave it hanging.
            self.finished.set()
            stopped = ("The worker stopped during this reply.", "worker_stopped")
            await asyncio.shield(self._end(RunStatus.ERROR, stopped))
            raise
        except Exception as exc:
            logger.exception("run %s failed", self.k.sid)
            status, error = RunStatus.ERROR, (str(exc) or type(exc).__name__, "agent_error")
        finally:
            self.finished.set()
            await watcher
            await self.archiving.wait()
        if self.lost:
            logger.warning("run %s was taken from this worker (lease lapsed)", self.k.sid)
            return
        await self._end(status, error)

    async def _context(self) -> RunContext:
        message, enqueued = await self.rt.runs.question(self.k)
        if enqueued and self.record.user_message_id:
            # An enqueued message joins the conversation only once its turn comes.
            await self.rt.store.save(
                cid=self.k.cid,
                message=NewMessage(id=self.record.user_message_id, role="user", content=message),
            )
        return RunContext(
            conversation_id=self.k.cid,
            user_id=self.record.user_id,
            session_id=self.k.sid,
            message_id=self.record.message_id,
            message=message,
            history=await self.rt.store.history(cid=self.k.cid),
            settings=self.rt.settings,
            cancelled=lambda: self.stop_asked,
        )

    async def _consume(self, ctx: RunContext) -> None:
        """Pull the agent's events; write them at most once per `delta_flush_ms`."""
        loop = asyncio.get_running_loop()
        interval = self.rt.settings.delta_flush_ms / 1000
        events = aiter(self.rt.agent(ctx))
        try:
            while not (self.stop_asked or self.lost or self.agent_error):
                self.step = asyncio.ensure_future(anext(events))
                while not self.step.done():
                    wait = None
                    if self.buffer or self.unsent:
                        wait = max(0.0, self.last_write + interval - loop.time())
                    await asyncio.wait({self.step}, timeout=wait)
                    if not self.step.done():
                        await self._write()
                if self.step.cancelled():
                    return  # stopped: `_stop` cancelled the agent's step
                try:
                    item = self.step.result()
                except StopAsyncIteration:
                    return
                self._add(delta(item) if isinstance(item, str) else item)
        finally:
            if self.step is not None:
                self.step.cancel()
                # The generator can only be closed once its cancelled step has unwound.
                await asyncio.gather(self.step, return_exceptions=True)
            if isinstance(events, AsyncGenerator):  # a plain async iterator has no aclose
                await events.aclose()

    def _add(self, event: Event) -> None:
        if event.type == EventType.ERROR:
            # Written by the finish script with the run's `end`, so the stream holds it once.
            data = event.data
            self.agent_error = (str(data.get("message", "")), str(data.get("code", "agent_error")))
            return
        self.reply.add(event.type, event.data)
        if event.type == EventType.DELTA and self.buffer and self.buffer[-1].type == "delta":
            self.buffer[-1] = delta(self.buffer[-1].data["text"] + event.data["text"])
        else:
            self.buffer.append(event)

    async def _write(self) -> None:
        """Send the buffered events as one batch; while Redis is unreachable, hold them.

        A batch that failed goes again unchanged, with its number, so the append
        script writes it once even if the failed try did get through.
        """
        if not self.unsent:
            if not self.buffer:
                return
            self.unsent, self.buffer = self.buffer, []
            self.batches += 1
        self.last_write = asyncio.get_running_loop().time()
        try:
            stop = await self.rt.runs.append(self.k, self.unsent, batch=self.batches)
        except RedisError as exc:
            if self.unreachable_since is None:
                self.unreachable_since = self.last_write
                logger.warning("run %s: Redis unreachable (%s); holding events", self.k.sid, exc)
            return
        if self.unreachable_since is not None:
            outage = self.last_write - self.unreachable_since
            logger.warning("run %s: Redis is back after %.1f s; events sent", self.k.sid, outage)
        metrics.events_written(self.unsent, self.batches == 1, self.record.created_at)
        self.unsent, self.unreachable_since = [], None
        if stop:
            self._stop()

    async def _watcher(self) -> None:
        """Renew the lease every third of its length; look for a stop in between."""
        settings = self.rt.settings
        loop = asyncio.get_running_loop()
        next_renewal = loop.time() + settings.lease_seconds / 3
        while not self.finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.finished.wait(), settings.cancel_poll_seconds)
                return
            try:
                if loop.time() >= next_renewal:
                    next_renewal = loop.time() + settings.lease_seconds / 3
                    state = await self.rt.runs.heartbeat(
                        self.k, worker=self.worker, lease_seconds=settings.lease_seconds
                    )
                    if state == -1:
                        self.lost = True
                        self._stop()
                        return
                    stop = bool(state)
                    self.archiving.poke()
                else:
                    stop = bool(await self.rt.redis.exists(self.k.cancel))
            except RedisError as exc:
                logger.warning("run %s: could not reach Redis (%s); retrying", self.k.sid, exc)
                continue
            if stop:
                self._stop()

    def _stop(self) -> None:
        self.stop_asked = True
        if self.step is not None:
            self.step.cancel()

    async def _end(self, status: RunStatus, error: tuple[str, str] | None) -> None:
        # What the agent said before the end goes out first, through a short outage too.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.rt.settings.lease_seconds
        while (self.unsent or self.buffer) and loop.time() < deadline:
            await self._write()
            if self.unsent:
                await asyncio.sleep(0.2)
        try:
            await end_run(self.rt, self.k, self.record, status, self.reply, error=error)
        except RedisError as exc:
            # end_run stores the reply before it touches Redis: only the run's end is missing.
            logger.error(
                "run %s: reply stored, but Redis is unreachable to end the run (%s); "
                "the reaper ends it once Redis is back",
                self.k.sid,
                exc,
            )
