"""The outbox: what a run's stream gets from the agent's events, batch by batch."""

from __future__ import annotations

from turnstream import events
from turnstream.runs.outbox import MERGED_CHARS, Outbox


def _texts(batch):
    return [(e.type.value, e.data) for e in batch]


def test_adjacent_deltas_become_one_and_other_events_keep_their_place():
    box = Outbox()
    for item in ["Hel", "lo"]:
        box.add_text(item)
    box.add(events.delta(" world"))
    box.add(events.tool_call("c1", "clock", "{}"))
    box.add(events.reasoning("hm"))
    box.add(events.reasoning("m"))
    box.add(events.Event(events.EventType.DELTA, {"text": "!", "lang": "en"}))
    box.add_text("?")
    assert _texts(box.take()) == [
        ("delta", {"text": "Hello world"}),
        ("tool_call", {"id": "c1", "name": "clock", "arguments": "{}"}),
        ("reasoning", {"text": "hmm"}),
        ("delta", {"text": "!", "lang": "en"}),
        ("delta", {"text": "?"}),
    ]
    assert box.number == 1


def test_a_batch_not_sent_goes_again_with_its_number_and_later_events_wait():
    box = Outbox()
    box.add_text("one")
    first = box.take()
    box.add_text("two")  # arrives while the first batch's write fails
    assert box.take() == first and box.number == 1
    box.sent()
    assert _texts(box.take()) == [("delta", {"text": "two"})] and box.number == 2
    box.sent()
    assert not box and box.take() == [] and box.number == 2


def test_a_long_burst_of_text_is_split_into_bounded_events_in_order():
    box = Outbox()
    words = [f"w{i} " for i in range(20_000)]
    for word in words:
        box.add_text(word)
    batch = box.take()
    assert "".join(e.data["text"] for e in batch) == "".join(words)
    assert len(batch) > 1 and all(len(e.data["text"]) <= MERGED_CHARS + 10 for e in batch)
