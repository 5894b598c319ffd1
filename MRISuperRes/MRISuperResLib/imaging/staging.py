"""Names of the hidden staging entries that outputs are written into before they are renamed into place, and the
removal of those a killed run left behind.

A run that is killed outright (SIGKILL, the out-of-memory killer, a power cut) cannot remove its staging folder.
Each staging entry therefore carries the host (and, on Linux, the PID namespace) and the process that made it
(``.mrisuperres-partial-<host>-<pid>-…``); the next run that writes into the same folder from the same host and
namespace removes the entries of processes that no longer exist. Entries of other hosts (a shared cluster file
system), of other containers and of live processes are never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import zlib
from pathlib import Path

#: First characters of every staging entry (a file or a folder) beside an output.
STAGING_PREFIX = ".mrisuperres-partial-"

_cleaned: set[Path] = set()
_lock = threading.Lock()


def _host() -> str:
    """Who may judge this process's entries: the host name (its letters and digits, plus a checksum of the full
    name, so ``node-1`` and ``node1`` differ) and, on Linux, the PID namespace: two containers sharing a host name
    and a folder number their processes independently, so neither may judge the other's PIDs."""
    name = socket.gethostname()
    identity = f"{re.sub(r'[^A-Za-z0-9]', '', name)[:32] or 'host'}{zlib.crc32(name.encode()):08x}"
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return identity
    return identity + "n" + "".join(ch for ch in namespace if ch.isdigit())


def staging_prefix() -> str:
    """The prefix of this process's staging entries: ``.mrisuperres-partial-<host>-<pid>-`` (``<host>`` as
    :func:`_host` makes it)."""
    return f"{STAGING_PREFIX}{_host()}-{os.getpid()}-"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and has not exited (POSIX and Windows)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        try:
            code = ctypes.c_ulong()
            return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(folder: Path) -> list[Path]:
    """Remove the staging entries in ``folder`` left by dead processes of this host; returns what was removed.

    Each folder is looked at once per process (a cohort writing thousands of outputs into one folder does not
    list it again for each). Errors are ignored: a leftover that cannot be removed is only clutter.
    """
    folder = Path(folder)
    with _lock:
        key = folder.resolve()
        if key in _cleaned:
            return []
        _cleaned.add(key)
    pattern = re.compile(re.escape(STAGING_PREFIX) + re.escape(_host()) + r"-(\d+)-")
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or int(match.group(1)) == os.getpid() or process_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
