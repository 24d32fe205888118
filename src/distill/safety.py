"""Folders distill owns, content checksums and run locks: the trust and fault-safety helpers.

- **Ownership.** Every folder distill creates to hold its own output (a run folder, the demo
  folder, a teacher cache, an export variant) gets a marker file (:data:`MARKER`) the moment it
  is made. :func:`remove_owned` deletes a folder only when it carries that marker, so
  ``--overwrite`` on a home folder or a source tree is refused, naming what is in it.
- **Checksums.** :func:`sha256_file` is the content hash written beside (or inside) every model
  file, checkpoint and cache shard and checked when it is loaded back (see
  :mod:`distill.artifacts`), so a flipped byte is refused instead of loading as a NaN model.
- **Locks.** :func:`run_lock` holds ``<folder>/.distill.lock`` (``filelock``) for the lifetime
  of a run; a second run on the same folder is refused while the first lives.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Iterator

MARKER = ".distill-owned"
LOCK_FILE = ".distill.lock"
LOCK_INFO = ".distill.lock.json"


class NonFiniteError(ValueError):
    """A NaN or infinity where a number must be finite (a model's outputs, a training loss); the
    message names where, and what to check."""


class FolderError(ValueError):
    """A folder distill may not delete, write or lock; the message names it and says why."""


def mark_owned(folder: str | Path, kind: str) -> Path:
    """Create ``folder`` if needed and write the marker that says distill made it (``kind``: run, cache ...)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    if not marker.is_file():
        marker.write_text(json.dumps({"made_by": "distill", "kind": kind}) + "\n")
    return folder


def is_owned(folder: str | Path) -> bool:
    """True when ``folder`` carries distill's marker file."""
    return (Path(folder) / MARKER).is_file()


def describe_contents(folder: str | Path, limit: int = 6) -> str:
    """A short listing of ``folder`` for error messages: ``'a.txt', 'src/' and 12 more``."""
    folder = Path(folder)
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        return f"(unreadable: {exc.strerror})"
    if not entries:
        return "nothing"
    names = [f"'{entry.name}/'" if entry.is_dir() else f"'{entry.name}'" for entry in entries[:limit]]
    more = len(entries) - limit
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def remove_owned(folder: str | Path, what: str = "folder", *, keep: tuple[str, ...] = ()) -> None:
    """Delete ``folder`` (a path that may not exist) if and only if distill made it.

    An empty folder is removed too (there is nothing to lose). Anything else without
    :data:`MARKER` raises :class:`FolderError` naming the folder and what it holds; a path that
    is a file is refused the same way. ``keep``: names of entries to leave (the folder is then
    emptied but for them, e.g. the lock file of the run that is replacing it).
    """
    folder = Path(folder)
    if folder.is_symlink():
        raise FolderError(f"{what} {folder} is a symbolic link; distill replaces only folders it made itself. "
                          "Choose another folder.")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise FolderError(f"{what} {folder} is a file, not a folder; choose another path")
    if not is_owned(folder):
        if not any(entry.name not in keep for entry in folder.iterdir()):
            if not keep:
                folder.rmdir()
            return
        raise FolderError(
            f"refusing to delete {what} {folder}: distill did not make it (it has no {MARKER} marker) and it holds "
            f"{describe_contents(folder)}. Remove it yourself if it is really to go, or choose another folder."
        )
    if not keep:
        shutil.rmtree(folder)
        return
    for entry in folder.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def check_writable_dir(folder: str | Path, what: str) -> Path:
    """Refuse an output path that is an existing file or a folder distill cannot write into."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FolderError(f"{what} {folder} is an existing file, not a folder; choose another path")
    probe = folder
    while not probe.exists():  # the nearest existing ancestor must be writable
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise FolderError(f"{what} {folder}: {probe} is a file, so no folder can be made under it")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise FolderError(f"{what} {folder}: {probe} is not writable by this user; choose another folder")
    return folder


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-byte pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


@contextlib.contextmanager
def run_lock(folder: str | Path, *, what: str = "run folder", say=None) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` while the body runs; refuse when another process has it.

    The lock is ``folder/.distill.lock`` (``filelock``'s OS-level lock, released by the kernel
    when its holder dies) with ``.distill.lock.json`` beside it naming the holder's pid and host.
    A lock file left by a dead process is taken over, with a message through ``say``.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    info_path = folder / LOCK_INFO
    lock = FileLock(str(folder / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = "another process"
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(info_path.read_text())
            holder = f"process {info['pid']} on host {info['host']}"
        raise FolderError(f"{what} {folder} is in use by {holder} (lock {folder / LOCK_FILE}); wait for it to "
                          "finish or stop it, or choose another folder") from None
    try:
        if info_path.is_file() and say is not None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                info = json.loads(info_path.read_text())
                if info.get("host") == socket.gethostname() and not _pid_alive(int(info["pid"])):
                    say(f"{what} {folder}: taking over the lock left by process {info['pid']}, which is no longer running")
        info_path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")
        yield
    finally:
        info_path.unlink(missing_ok=True)
        lock.release()
