"""potpie-ui's field names, in one module: its request bodies, conversations and tool calls.

What turnstream has no notion of is kept only to be echoed back: a conversation's
`status`, `project_ids` and `agent_ids` go into its metadata under the key `potpie`
(shown as such by /api/v1, copied and deleted with the conversation), and nothing in
turnstream reads them. What potpie-ui sends that nothing renders is ignored: the
`user_id` of a create (the token says who the user is), `node_ids`, `session_id`
(turnstream names its runs). Citations and sharing do not exist here: `citations` is
always empty, and the caller is always the conversation's creator.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from turnstream.api.schemas import TextBody
from turnstream.store.views import ConversationView

METADATA_KEY = "potpie"
STATUSES = ("active", "archived", "deleted")

# No control characters: they cannot be stored in every database.
_Text = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
_Id = Annotated[str, Field(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]
_Ids = Annotated[list[_Id], Field(max_length=100)]


class _Body(TextBody):
    """A body of potpie-ui's: fields it sends that are not read here are ignored."""

    model_config = ConfigDict(extra="ignore")


class CreateBody(_Body):
    title: _Text = "New conversation"
    status: Literal["active", "archived", "deleted"] = "active"
    project_ids: _Ids = Field(default_factory=list)
    agent_ids: _Ids = Field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        """The conversation's metadata: the fields kept to be echoed."""
        kept = {"status": self.status, "project_ids": self.project_ids, "agent_ids": self.agent_ids}
        return {METADATA_KEY: kept}


class RenameBody(_Body):
    title: _Text


def iso(moment: datetime) -> str:
    """A UTC time as /api/v1 writes it: `2026-11-30T12:24:04.744447Z`."""
    return moment.isoformat().replace("+00:00", "Z")


def kept(conversation: ConversationView) -> dict[str, Any]:
    """The echoed fields; a conversation made over /api/v1 (or metadata changed there) gets
    potpie's defaults for what it lacks."""
    saved = conversation.metadata.get(METADATA_KEY)
    saved = saved if isinstance(saved, dict) else {}
    status = saved.get("status")
    return {
        "status": status if status in STATUSES else "active",
        "project_ids": _strings(saved.get("project_ids")),
        "agent_ids": _strings(saved.get("agent_ids")),
    }


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def list_item(conversation: ConversationView) -> dict[str, Any]:
    """An item of the conversation list (potpie-ui's sidebar)."""
    fields = kept(conversation)
    return {
        "id": conversation.id,
        "title": conversation.title,
        "status": fields["status"],
        "project_ids": fields["project_ids"],
        "agent_id": next(iter(fields["agent_ids"]), None),
        "created_at": iso(conversation.created_at),
        "updated_at": iso(conversation.updated_at),
    }


def info(conversation: ConversationView, *, total_messages: int) -> dict[str, Any]:
    """A conversation's `info`; only its owner ever gets it, so it is always theirs to write."""
    return {
        "id": conversation.id,
        "title": conversation.title,
        **kept(conversation),
        "created_at": iso(conversation.created_at),
        "updated_at": iso(conversation.updated_at),
        "total_messages": total_messages,
        "is_creator": True,
        "access_type": "write",
    }


def tool_call(call_id: str, name: str, arguments: str | None) -> dict[str, Any]:
    """A tool call as it starts (`event_type` `call`)."""
    return {
        "call_id": call_id,
        "event_type": "call",
        "tool_name": name,
        "tool_response": "",
        "tool_call_details": {"arguments": _parsed(arguments)},
    }


def tool_result(
    call_id: str, name: str, arguments: str | None, content: str, *, is_error: bool
) -> dict[str, Any]:
    """A tool call's result (`result`, or `error` for a failed one): potpie-ui keys both by
    `call_id` and shows the newest."""
    return {
        **tool_call(call_id, name, arguments),
        "event_type": "error" if is_error else "result",
        "tool_response": content,
    }


def _parsed(arguments: str | None) -> Any:
    """The call's JSON arguments as an object, as potpie-ui shows them; else the text."""
    if arguments is None:
        return {}
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments
