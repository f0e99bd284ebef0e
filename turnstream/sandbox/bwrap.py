"""The bubblewrap command line: what a sandboxed command sees of the host, and as whom.

The sandbox has no network and no other namespace of the host (`--unshare-all`),
no capabilities, and no way to make a user namespace of its own. It sees `/usr`
(and `/bin`, `/lib*`, `/sbin` as links into it) read-only, the few `/etc` files
programs need, a `passwd` of its own, a fresh `/proc`, a minimal `/dev`, a
`/tmp` in memory and the call's copy of the workspace at `/workspace`: nothing
else of the host (not the data directory, the database, Redis's files, `/root`,
other workspaces, turnstream's code or its virtualenv, or any environment
variable of the worker: bwrap starts with an empty environment too). The
command's shell is PID 1 of the sandbox: when it ends, the kernel kills every
process it left behind.

Run by root, the sandbox gets a user id of its own (`call_identity`): the kernel
does not count root's processes against a process limit, and as root the
sandbox would read every root-owned file bound in as its owner.

The limits are applied inside, by `LIMITS_SCRIPT`, before the command starts;
it reports on a pipe that they hold, and the runner runs nothing it has not
heard that from (fail closed).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import turnstream
from turnstream.config import Settings

SANDBOX_UID = 65534  # the id a command sees (`id`: sandbox), whoever runs turnstream
HOME = "/workspace"
PATH = "/usr/local/bin:/usr/bin:/bin"
VENV = "/opt/venv"
WORKSPACE = "workspace"  # the call directory's copy of the workspace, bound at HOME
SHM_BYTES = 64 * 1024 * 1024  # /dev/shm, in memory: for POSIX shared memory (multiprocessing)
# Programs need these to load libraries, name users and tell the time; nothing more of /etc.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime",
             "nsswitch.conf", "mime.types", "ssl/openssl.cnf")  # fmt: skip
# The per-call user ids root hands out: far above any real account's.
FIRST_CALL_UID = 1_500_000_000
CALL_UIDS = 400_000_000

# Sets every limit, soft and hard, or exits before the command runs. The limits are
# set in here and not on bwrap: the process limit counts per user namespace only for
# processes inside it. `ulimit -f` counts KiB, `-v` KiB.
LIMITS_SCRIPT = """\
ulimit -S -H -c 0 -t "$2" -v "$3" -f "$4" -n "$5" -u "$6" || exit 125
echo limits >&"$7"
eval "exec $7>&-"
exec /bin/bash -c "$1"
"""


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot make its namespaces here; the message says the fix."""


@dataclass(frozen=True)
class Identity:
    """Who runs bwrap: an unprivileged id of this call's own when turnstream runs as root."""

    uid: int
    gid: int

    @property
    def switches(self) -> bool:
        return self.uid != os.getuid()

    def prefix(self) -> list[str]:
        """What starts bwrap as this identity: `setpriv` (util-linux) when it switches.

        A program, not a `preexec_fn` or Popen's `user=`: no Python runs between fork
        and exec, and the event loop of `serve` (uvloop) takes neither `user=` nor `group=`.
        """
        if not self.switches:
            return []
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise SandboxUnavailable(
                "running as root, the sandbox needs `setpriv` to drop to a user of its own, "
                "and it is not on PATH: apt-get install util-linux"
            )
        ids = [f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]
        return [setpriv, *ids, "--no-new-privs", "--"]


def call_identity() -> Identity:
    if os.getuid() != 0:
        return Identity(os.getuid(), os.getgid())
    uid = FIRST_CALL_UID + secrets.randbelow(CALL_UIDS)
    return Identity(uid, uid)


def bwrap_path() -> str:
    """Where bwrap is on PATH; SandboxUnavailable saying how to install it if nowhere."""
    found = shutil.which("bwrap")
    if found is None:
        raise SandboxUnavailable(
            "the bash tool needs bubblewrap, and `bwrap` is not on PATH: "
            "apt-get install bubblewrap (or leave `sandbox` out of TURNSTREAM_TOOLS)"
        )
    return found


def command_line(
    settings: Settings,
    call_dir: Path,
    command: str,
    *,
    identity: Identity,
    report_fd: int,
    info_fd: int,
) -> list[str]:
    """bwrap's arguments: `command` on `call_dir/workspace`, the limits reported on
    `report_fd` (by the sandbox) and the sandbox's PID 1 on `info_fd` (by bwrap)."""
    bwrap = bwrap_path()  # first: its absence is the problem to name
    args = [
        *identity.prefix(),
        bwrap,
        "--unshare-all",
        "--unshare-user",  # --unshare-all only tries it; here it is required
        "--disable-userns",
        "--assert-userns-disabled",
        "--die-with-parent",
        "--as-pid-1",  # no bwrap inside: the command's shell is PID 1, and its end the end
        "--new-session",
        "--cap-drop", "ALL",
        "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_UID),
        "--hostname", "sandbox",
        "--info-fd", str(info_fd),  # where bwrap says which process is the sandbox's PID 1
        "--clearenv",
        *_environment(settings),
        *_filesystem(settings, call_dir),
        "--chdir", HOME,
        "--", "/bin/bash", "-c", LIMITS_SCRIPT, "limits", command,
        *(str(n) for n in _limits(settings)),
        str(report_fd),
    ]  # fmt: skip
    return args


def _environment(settings: Settings) -> list[str]:
    path = f"{VENV}/bin:{PATH}" if settings.sandbox_python else PATH
    variables = {"PATH": path, "HOME": HOME, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "USER": "sandbox"}
    return [arg for name, value in variables.items() for arg in ("--setenv", name, value)]


def _filesystem(settings: Settings, call_dir: Path) -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for link in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        if Path("/usr", link).is_dir():  # as merged-/usr Debian has them: links into /usr
            args += ["--symlink", f"usr/{link}", f"/{link}"]
    for name in ETC_FILES:
        if Path("/etc", name).exists():
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for name in ("passwd", "group"):
        args += ["--ro-bind", str(call_dir / name), f"/etc/{name}"]
    for hidden in _own_files():
        args += ["--tmpfs", hidden, "--remount-ro", hidden]
    if settings.sandbox_python is not None:
        args += ["--ro-bind", str(settings.sandbox_python.resolve()), VENV]
    # /dev is a tmpfs of bwrap's: read-only but for the device nodes, and a small /dev/shm.
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm"]
    args += ["--remount-ro", "/dev"]
    args += ["--size", str(settings.sandbox_tmp_bytes), "--tmpfs", "/tmp"]
    args += ["--bind", str(call_dir / WORKSPACE), HOME]
    return [*args, "--remount-ro", "/"]  # the root's own folders (/etc, /opt) too


def _own_files() -> list[str]:
    """turnstream's code and virtualenv, where they lie under /usr (a system-wide install)."""
    places = {Path(turnstream.__file__).resolve().parent}
    if sys.prefix != sys.base_prefix:
        places.add(Path(sys.prefix).resolve())
    return sorted(str(p) for p in places if p.is_relative_to("/usr"))


def _limits(settings: Settings) -> tuple[int, ...]:
    """`ulimit`'s arguments: CPU seconds, address space and file size in KiB, files, processes."""
    return (
        settings.sandbox_cpu_seconds,
        settings.sandbox_memory_bytes // 1024,
        max(settings.sandbox_file_bytes // 1024, 1),
        settings.sandbox_open_files,
        settings.sandbox_processes,
    )


def write_identity_files(call_dir: Path) -> None:
    """The sandbox's own /etc/passwd and /etc/group: one user, `sandbox`, at home in /workspace."""
    uid = SANDBOX_UID
    (call_dir / "passwd").write_text(f"sandbox:x:{uid}:{uid}:sandbox:{HOME}:/bin/bash\n")
    (call_dir / "group").write_text(f"sandbox:x:{uid}:\n")
