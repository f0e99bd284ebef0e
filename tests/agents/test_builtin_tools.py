"""The built-in tools: a clock, a safe calculator (no eval), an echo."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from turnstream.agents.builtin_tools import calculator, clock, echo


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2+2", "4"),
        ("(3 + 4) * 5", "35"),
        ("2 + 3 * 4 ** 2", "50"),
        ("-2 ** 2", "-4"),
        ("7 / 2", "3.5"),
        ("10 / 2", "5"),
        ("7 // 2 + 7 % 2", "4"),
        ("0.1 + 0.2", "0.30000000000000004"),
        ("2 ** -1", "0.5"),
        ("2 ** 100", str(2**100)),
    ],
)
def test_the_calculator_does_arithmetic(expression: str, value: str) -> None:
    assert calculator(expression) == value


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("__import__('os').system('true')", "unsupported syntax"),
        ("open('/etc/passwd')", "unsupported syntax"),
        ("x + 1", "unsupported syntax"),
        ("(1).__class__", "unsupported syntax"),
        ("'a' * 3", "unsupported syntax"),
        ("True + True", "unsupported syntax"),
        ("[1, 2]", "unsupported syntax"),
        ("1 if 1 else 2", "unsupported syntax"),
        ("2 +", "not an arithmetic expression"),
        ("9 ** 9 ** 9", "too large"),
        ("10 ** 5000", "too large"),
        ("(10 ** 1000) ** 1000", "too large"),
        ("(-8) ** 0.5", "complex"),
        ("1 + " * 300 + "1", "longer than"),
    ],
)
def test_the_calculator_refuses_anything_but_arithmetic(expression: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        calculator(expression)


def test_the_calculator_lets_arithmetic_errors_through() -> None:
    with pytest.raises(ZeroDivisionError):
        calculator("1 / 0")
    with pytest.raises(OverflowError):
        calculator("10.0 ** 400")


def test_the_clock_tells_the_time_in_a_zone() -> None:
    utc = datetime.strptime(clock(), "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - utc).total_seconds()) < 5
    assert clock("Asia/Tokyo").endswith(" JST")
    with pytest.raises(Exception, match="Nowhere"):
        clock("Nowhere/Land")


def test_echo_says_it_back() -> None:
    assert echo("hi there") == "hi there"
