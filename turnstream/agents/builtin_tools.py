"""Built-in tools: a clock, a calculator and an echo, which need no network.

The demo agent calls them on `/tool` messages. Any agent with a tool loop can
offer them too: `TURNSTREAM_TOOLS=turnstream.agents.builtin_tools:TOOLS`.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
MAX_EXPRESSION_CHARS = 500
MAX_RESULT_BITS = 4096  # integers up to about 1,200 digits


def clock(timezone: str = "UTC") -> str:
    """The current date and time.

    Args:
        timezone: an IANA time zone name, such as Europe/Lisbon.
    """
    zone = UTC if timezone.upper() == "UTC" else ZoneInfo(timezone)
    return datetime.now(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression: numbers, + - * / // % **, and parentheses.

    Args:
        expression: for example (3 + 4) * 5 / 2.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {exc.msg}") from None
    value = _evaluate(tree.body)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return str(value)


def echo(text: str) -> str:
    """Say `text` back, unchanged.

    Args:
        text: anything.
    """
    return text


def _evaluate(node: ast.expr) -> int | float:
    """Numbers and arithmetic only: any other syntax (names, calls, attributes) is refused."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):  # True + True: not a number here
            raise ValueError(f"unsupported syntax: {node.value!r}")
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and isinstance(right, int) and isinstance(left, int):
            if abs(right) > MAX_RESULT_BITS or (left.bit_length() - 1) * right > MAX_RESULT_BITS:
                raise ValueError("the result would be too large")
        return _checked(_BINARY[type(node.op)](left, right))
    raise ValueError(f"unsupported syntax: {ast.unparse(node)!r}")


def _checked(value: Any) -> int | float:
    if isinstance(value, complex):
        raise ValueError("the result is a complex number")
    if isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS:
        raise ValueError("the result is too large")
    result: int | float = value
    return result


TOOLS: list[Callable[..., str]] = [clock, calculator, echo]
