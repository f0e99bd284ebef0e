"""The Lua scripts turnstream runs in Redis, kept as `.lua` files beside this module.

Each file starts with a comment block naming its KEYS and ARGV. Scripts are
read once, at import of the module that registers them.
"""

from __future__ import annotations

from importlib import resources


def load(name: str) -> str:
    """The source of `<name>.lua`."""
    return resources.files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
