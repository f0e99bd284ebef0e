"""The `turnstream` command: serve, worker, check, migrate, token create/list/revoke.

    commands.py    the typer app and its commands
    checks.py      what each command checks first (port, Redis, the database and
                   its schema), and the messages it fails with
    configured.py  the settings, and what they name (agent, tools, sandbox), checked
                   at start: one line per problem
    doctor.py      `turnstream check`: the settings and what they need, tried

Each command first checks what it needs, before any start-up work. When
something is wrong it says in a line or two on stderr what, and what to do,
and exits with 1; a traceback means a bug. Notes for the person at the
terminal go to stderr, so that stdout stays what a script captures
(`token create` prints the token alone).
"""

from turnstream.cli.commands import app

__all__ = ["app"]
