"""How many tokens a history may use, and how many it uses.

The budget is `TURNSTREAM_CONTEXT_TOKENS` (unset: the model's context window,
from the table below, else 32,000) less `TURNSTREAM_RESERVE_TOKENS`, which is
kept for the reply and for what the estimate misses.

The count starts from the model's own: every run stores the estimate of the
history it sent (`runs.context_estimate`) and the prompt tokens the model
counted for its first call (`runs.context_tokens`). Two turns of a long
conversation share nearly all of their history, so the newest run's ratio
of the two, applied to this turn's estimate, is that run's measured count
plus what changed since, at the rate the model counted it: a history the
estimate undercounts (base64, rare CJK) or overcounts (English prose) is
counted right from the second turn on. The ratio is kept within [0.5, 4]:
an agent's own system prompt and tool schemas are in the measured count
too, and a first turn of a few words should not make the next turn's scale
absurd.
"""

from __future__ import annotations

from turnstream.config import Settings

DEFAULT_WINDOW = 32_000
# Context windows by model name prefix, longest prefix first wins.
_WINDOWS = {
    "gpt-4o": 128_000,
    "gpt-4.1": 1_000_000,
    "gpt-5": 400_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4": 200_000,
    "claude": 200_000,
}
_SCALE = (0.5, 4.0)


def window(settings: Settings) -> int:
    """The tokens the model's input may use: the setting, or the model's known window."""
    if settings.context_tokens is not None:
        return settings.context_tokens
    model = settings.openai_model.rsplit("/", 1)[-1]  # OpenRouter: "openai/gpt-4o"
    for prefix in sorted(_WINDOWS, key=len, reverse=True):
        if model.startswith(prefix):
            return _WINDOWS[prefix]
    return DEFAULT_WINDOW


def budget(settings: Settings) -> int:
    """What the history may use: the window less the reserve (never below a tenth of it)."""
    whole = window(settings)
    return max(whole - settings.reserve_tokens, whole // 10)


def scale(calibration: tuple[int, int] | None) -> float:
    """Measured / estimated tokens of the newest run that has both; 1 without one."""
    if calibration is None:
        return 1.0
    estimate, measured = calibration
    low, high = _SCALE
    return min(max(measured / estimate, low), high)
