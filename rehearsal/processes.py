"""The stand-ins' own processes (the MSR front, the object store), found and
ended by their command lines: a killed run leaves no other trace of them."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def cmdline(pid: int) -> list[str]:
    """The process's arguments; [] when it is gone or not ours to read."""
    try:
        argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return []
    return [a.decode(errors="replace") for a in argv]


def arg(args: list[str], name: str) -> str | None:
    """The value after option `name` in `args`."""
    i = args.index(name) + 1 if name in args else len(args)
    return args[i] if i < len(args) else None


def instances(module: str, prefix: str, port: int | None) -> list[int]:
    """Pids of `python -m <module> ... --instance <prefix><port>` (any port when
    None)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        args = cmdline(int(entry.name))
        if module not in args:
            continue
        instance = arg(args, "--instance") or ""
        if instance == f"{prefix}{port}" or (port is None and instance.startswith(prefix)):
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie (a zombie holds no port and no file)."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def end(pids: list[int]) -> list[int]:
    """SIGTERM, then SIGKILL, each 3 s apart; the pids that survive both."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 3.0
        while (pids := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not pids:
            break
    return pids


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty)"
    except OSError as exc:
        return f"(cannot read it: {exc})"
