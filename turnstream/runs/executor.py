"""Executing one run: claim it, stream the agent's events into Redis, store them, end it.

The shape of an execution:

    claim (queued -> running, atomically)
    the history, fitted to the model (context/compaction.py): maybe a `compaction` event
    pull task: agent events -> outbox (outbox.py: adjacent deltas merged, batches numbered)
    consume loop: outbox -> Redis, the first event at once, then one batch per window
    watcher beside it: renews the lease, notices a stop, cancels the pull task
    store the run's messages and events in SQL (reply.py, archiver.py), then end the run

A run whose tool calls wait for the user's approval (docs/approvals.md) stores
what it has, lets go of its worker instead of ending (`_wait`), and is claimed
again once they are decided: that execution starts from the run's events so far
and the decisions (`ctx.decided`).

Length: the parts of one execution (pull, write, watch, wait, end) share its
state; split into modules, they would pass all of it around.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from redis.exceptions import RedisError

from turnstream import events, metrics
from turnstream.agents.base import AgentEvent, RunContext
from turnstream.config import Settings
from turnstream.context.compaction import Summarise, prepare
from turnstream.context.fit import tighter
from turnstream.events import Event, EventType
from turnstream.keys import RunKeys
from turnstream.live import tokens
from turnstream.live.record import RunRecord
from turnstream.live.status import RunStatus
from turnstream.runs import archiver
from turnstream.runs.ending import end_run
from turnstream.runs.outbox import Outbox
from turnstream.runs.reply import Reply
from turnstream.runtime import Runtime
from turnstream.store.claude_sessions import ClaudeSessions
from turnstream.store.views import NewMessage
from turnstream.store.workspace import FileChange, Limits, Workspace, announcing_uploads

logger = logging.getLogger("turnstream.runs")
T = TypeVar("T")


async def execute(rt: Runtime, cid: str, sid: str, *, worker: str) -> None:
    """Run the run `sid` if it is still queued; a no-op for one that ran or ended already."""
    k = RunKeys(cid, sid)
    record = await rt.runs.get(k)
    if record is None:
        logger.warning("run %s expired before a worker took it", sid)
        return
    if record.multitask_after and not await _its_turn(rt, RunKeys(cid, record.multitask_after)):
        logger.info("run %s waits behind a run that waits for approvals: handed out later", sid)
        return
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


async def _its_turn(rt: Runtime, before: RunKeys) -> bool:
    """Wait for the run `before` (multitask=enqueue) to end; False if it waits for a person.

    A run waiting for approvals may wait for hours: this task does not wait with it.
    The run stays queued, and the queued-run index hands it out once `before` has
    ended (runs/requeue.py).
    """
    while not await rt.runs.wait_ended(before, within=rt.settings.claim_seconds):
        ahead = await rt.runs.get(before)
        if ahead is not None and ahead.status is RunStatus.WAITING:
            return False
    return True


def _summariser(settings: Settings) -> Summarise | None:
    """The compaction's summary writer, if an OpenAI-compatible endpoint is configured.

    The openai SDK is imported only then: it adds half a second to every process start.
    """
    if not settings.has_openai_endpoint:
        return None
    from turnstream.agents.openai import summariser

    return summariser(settings)


class _Execution:
    """One run on this worker: a pull task, a consume loop that writes, a watcher beside it.

    Nothing here cancels a task that may be writing to Redis: a stop cancels only
    the task that pulls the agent's events (it never writes), and the watcher is
    told to finish, so a batch of events is never half-sent.
    """

    def __init__(self, rt: Runtime, k: RunKeys, record: RunRecord, worker: str) -> None:
        self.rt = rt
        self.k = k
        self.record = record
        self.worker = worker
        self.reply = Reply()
        self.outbox = Outbox()
        self.unreachable_since: float | None = None
        self.last_write = 0.0
        self.stop_asked = self.lost = False
        # (message, code) of an `error` the agent yielded: it ends the run as `error`.
        self.agent_error: tuple[str, str] | None = None
        self.asked: list[Event] = []  # `approval_request`s: written when the run waits
        self.finished = asyncio.Event()
        self.pulling: asyncio.Task[None] | None = None  # the agent's events, into the outbox
        self.woken: asyncio.Future[None] | None = None  # resolved by the next event
        self.archiving = archiver.KeepUp(rt, k)  # what a trim waits to drop, into SQL

    async def run(self) -> None:
        status, error = RunStatus.COMPLETED, None
        watcher = asyncio.create_task(self._watcher())
        try:
            ctx = await self._context()  # stores an enqueued run's question, in its turn
            if await self._read(lambda: self.rt.redis.exists(self.k.cancel)):
                self.stop_asked = True  # stopped while it waited for its turn: no agent
            else:
                await self._consume(ctx)
            if self.stop_asked:
                status = RunStatus.CANCELLED
            elif self.agent_error is not None:
                status, error = RunStatus.ERROR, self.agent_error
            elif self.asked:
                status = RunStatus.WAITING
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
        if status is RunStatus.WAITING and await self._wait():
            return
        await self._end(RunStatus.CANCELLED if status is RunStatus.WAITING else status, error)

    async def _context(self) -> RunContext:
        message, enqueued = await self._read(lambda: self.rt.runs.question(self.k))
        decided = (
            await self._read(lambda: self.rt.approvals.decisions(self.k))
            if self.record.waited
            else []
        )
        if decided:  # it goes on after waiting: its events so far are its reply so far
            self.reply = await self._read(lambda: archiver.reply_so_far(self.rt, self.k))
        elif enqueued and self.record.user_message_id:
            # An enqueued message joins the conversation only once its turn comes, with
            # the files uploaded until then.
            question = NewMessage(id=self.record.user_message_id, role="user", content=message)
            announce = announcing_uploads(self.rt.files, self.k.cid, question)
            await self.rt.store.save(cid=self.k.cid, message=question, also=announce)
        settings = self.rt.settings
        limits = Limits.of(settings)
        return RunContext(
            conversation_id=self.k.cid,
            user_id=self.record.user_id,
            session_id=self.k.sid,
            message_id=self.record.message_id,
            message=message,
            history=await self._history(),
            settings=settings,
            cancelled=lambda: self.stop_asked,
            workspace=Workspace(self.rt.files, self.k.cid, limits, on_change=self._file_changed),
            decided=tuple(decided),
            refit=partial(
                tighter,
                keep=settings.context_keep_tool_results,
                chars=settings.context_tool_result_chars,
            ),
            claude_sessions=(
                ClaudeSessions(self.rt.sessions, self.k.cid, limit=settings.claude_session_bytes)
                if settings.claude_session_bytes
                else None
            ),
        )

    async def _read(self, read: Callable[[], Awaitable[T]]) -> T:
        """A read the run's start makes in Redis, tried again through a short outage (a
        restart, a cluster failover) for up to a lease, as the run's writes are held."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.rt.settings.lease_seconds
        while True:
            try:
                return await read()
            except RedisError as exc:
                if loop.time() >= deadline:
                    raise
                logger.warning("run %s: could not reach Redis (%s); retrying", self.k.sid, exc)
                await asyncio.sleep(0.2)

    async def _history(self) -> list[dict[str, Any]]:
        """The conversation's history fitted to the model (context/); a compaction's event."""
        sessions = self.rt.sessions
        prepared = await prepare(
            sessions,
            cid=self.k.cid,
            settings=self.rt.settings,
            summarise=_summariser(self.rt.settings),
        )
        if prepared.event is not None:
            self._add(prepared.event)
        self.reply.context_estimate = prepared.estimate  # stored with the run's end
        return prepared.history

    async def _file_changed(self, change: FileChange) -> None:
        """A tool wrote or deleted a workspace file: a `file` event, with a signed link."""
        url = None
        if not change.deleted:
            (url,) = await tokens.file_links(
                self.rt.redis,
                self.rt.settings,
                user_id=self.record.user_id,
                cid=self.k.cid,
                paths=[change.info.path],
            )
        self._add(events.file(change.info.entry(), url, deleted=change.deleted))

    async def _consume(self, ctx: RunContext) -> None:
        """Pull the agent's events in a task; write the first after a quiet spell at once and
        those within `delta_flush_ms` after it as one batch (~40 writes/s at 1,000 tokens/s).
        """
        loop = asyncio.get_running_loop()
        interval = self.rt.settings.delta_flush_ms / 1000
        self.pulling = asyncio.create_task(self._pull(ctx))
        try:
            while not self.pulling.done():
                due = self.last_write + interval - loop.time() if self.outbox else None
                if due is not None and due <= 0:
                    await self._write()
                    continue
                waiting: set[asyncio.Future[None]] = {self.pulling}
                if due is None:  # nothing to send: wait for the next event (_add resolves it)
                    self.woken = loop.create_future()
                    waiting.add(self.woken)
                await asyncio.wait(waiting, timeout=due, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.pulling.cancel()  # a no-op once done; our own cancellation stops the agent
            await asyncio.gather(self.pulling, return_exceptions=True)
        if not self.pulling.cancelled():
            self.pulling.result()  # the agent's own exception, if it raised one

    async def _pull(self, ctx: RunContext) -> None:
        """Feed the agent's events to the outbox until it ends, errs or is stopped."""
        events = aiter(self.rt.agent(ctx))
        try:
            async for item in events:
                self._add(item)
                if self.stop_asked or self.lost or self.agent_error:
                    return
        finally:
            if isinstance(events, AsyncGenerator):  # a plain async iterator has no aclose
                await events.aclose()

    def _add(self, item: AgentEvent) -> None:
        if isinstance(item, str):  # plain reply text: most of a fast model's events
            self.reply.add_text(item)
            self.outbox.add_text(item)
        elif item.type == EventType.APPROVAL_REQUEST:
            self.asked.append(item)  # written by the wait script, with the approvals
        elif item.type != EventType.ERROR:
            self.reply.add(item.type, item.data)
            self.outbox.add(item)
        else:  # written by the finish script with the run's `end`, so the stream holds it once
            message, code = item.data.get("message", ""), item.data.get("code", "agent_error")
            self.agent_error = (str(message), str(code))
        if self.woken is not None and not self.woken.done():
            self.woken.set_result(None)

    async def _write(self) -> None:
        """Send the outbox's batch; while Redis is unreachable, hold it (and its number)."""
        batch = self.outbox.take()
        if not batch:
            return
        self.last_write = asyncio.get_running_loop().time()
        try:
            stop = await self.rt.runs.append(self.k, batch, batch=self.outbox.number)
        except RedisError as exc:
            if self.unreachable_since is None:
                self.unreachable_since = self.last_write
                logger.warning("run %s: Redis unreachable (%s); holding events", self.k.sid, exc)
            return
        if self.unreachable_since is not None:
            outage = self.last_write - self.unreachable_since
            logger.warning("run %s: Redis is back after %.1f s; events sent", self.k.sid, outage)
        metrics.events_written(batch, self.outbox.number == 1, self.record.created_at)
        self.outbox.sent()
        self.unreachable_since = None
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
        if self.pulling is not None:
            self.pulling.cancel()

    async def _flush(self) -> None:
        """What the agent said goes out before the run ends or waits, through a short outage."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.rt.settings.lease_seconds
        while self.outbox and loop.time() < deadline:
            await self._write()
            if self.outbox.unsent:
                await asyncio.sleep(0.2)

    async def _wait(self) -> bool:
        """Store the run so far and let it wait for the user's decisions, holding nothing.

        False when it cannot wait (a stop came, or the run is no longer this worker's).
        """
        await self._flush()
        messages = self.reply.messages(
            RunStatus.WAITING, message_id=self.record.message_id, session_id=self.k.sid
        )
        await self.rt.store.save_run(cid=self.k.cid, session_id=self.k.sid, messages=messages)
        await archiver.save(self.rt, self.k)
        if not await self.rt.approvals.wait(self.k, worker=self.worker, requests=self.asked):
            return False
        logger.info("run %s waits for %d approval(s)", self.k.sid, len(self.asked))
        return True

    async def _end(self, status: RunStatus, error: tuple[str, str] | None) -> None:
        await self._flush()
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
