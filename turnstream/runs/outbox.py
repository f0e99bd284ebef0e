"""A run's events on their way to Redis: merged, batched, numbered, held through an outage.

The executor adds the agent's events as they come and takes a batch whenever its
flush window closes. Adjacent text-only `delta`s become one `delta`, their texts
joined (and adjacent `reasoning`s one `reasoning`): a model at 1,000 tokens/s
yields some 25 deltas per window, and the stream gets one entry for them, which
its clients read as the same text in the same order. The text is joined once,
when the batch is taken, so merging costs a list append per delta however long
the merged text grows; past `MERGED_CHARS` the next text starts a new event, so
that no entry (nor SSE event) grows without bound when a burst comes at once.

A batch taken keeps its number until Redis has it: after a failed write the same
batch goes again with the same number, and the append script writes it once.
"""

from __future__ import annotations

from turnstream.events import Event, EventType

# Adjacent events of these types (with no field but `text`) are sent as one.
MERGED = frozenset({EventType.DELTA, EventType.REASONING})
MERGED_CHARS = 32_768


class Outbox:
    def __init__(self) -> None:
        self.waiting: list[Event] = []  # in order; the text being merged comes after them
        self._text: list[str] = []
        self._text_type: EventType | None = None
        self._text_chars = 0
        self.unsent: list[Event] = []  # the batch taken, until Redis has it
        self.number = 0  # the batch's number: 1, 2, …

    def __bool__(self) -> bool:
        """Whether anything is left to send."""
        return bool(self.unsent or self.waiting or self._text)

    def add(self, event: Event) -> None:
        if event.type in MERGED and event.data.keys() == {"text"}:
            self.add_text(event.data["text"], event.type)
        else:
            self._close_text()
            self.waiting.append(event)

    def add_text(self, text: str, type: EventType = EventType.DELTA) -> None:
        """Text for the event being merged (a `delta` unless `type` says otherwise)."""
        if type is not self._text_type or self._text_chars > MERGED_CHARS:
            self._close_text()
            self._text_type = type
        self._text.append(text)
        self._text_chars += len(text)

    def take(self) -> list[Event]:
        """The batch to send: the one a failed write left, else all that waits, numbered."""
        if not self.unsent:
            self._close_text()
            if self.waiting:
                self.unsent, self.waiting = self.waiting, []
                self.number += 1
        return self.unsent

    def sent(self) -> None:
        """Redis has the batch taken."""
        self.unsent = []

    def _close_text(self) -> None:
        if self._text_type is not None:
            self.waiting.append(Event(self._text_type, {"text": "".join(self._text)}))
            self._text, self._text_type, self._text_chars = [], None, 0
