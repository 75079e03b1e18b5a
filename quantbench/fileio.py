"""File system helpers: atomic writes (a reader sees either the old file or the complete new one) with
the permissions of a plain ``open(path, "w")``, and output folders checked before any work."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from quantbench.errors import QuantbenchError, first_line

NEW_FILE_MODE = 0o666
"""The mode ``open(path, "w")`` asks for; the umask takes its bits away."""

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system says (Linux' ``/proc``), else set
    and restored at once under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it over ``path`` on success.

    Whatever the body writes to the yielded path replaces ``path`` in one
    ``os.replace`` when the body returns. If the body raises (including
    KeyboardInterrupt), the temporary file is removed and ``path`` is left as it
    was, so an interrupted run never leaves a half-written file.

    Args:
        path: the final destination; its folder is created if missing.

    Yields:
        A path in the same folder (same file system) to write to.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, NEW_FILE_MODE & ~current_umask())  # mkstemp makes 0600
    finally:
        os.close(fd)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def make_folders(path: str | os.PathLike[str], option: str) -> list[Path]:
    """Create the output folder ``path`` (and its missing parents) and check that files can be written in
    it: a command calls this before any work, so a bad output folder fails at once.

    Args:
        path: the folder.
        option: the option that named it, for messages (``--out``).

    Returns:
        The folders created, outermost first (none when ``path`` existed), for
        :func:`remove_empty_folders` when the command fails.

    Raises:
        QuantbenchError: ``path`` or a parent is a file, or the folder cannot be created or written to.
    """
    folder = Path(path)
    created: list[Path] = []
    doing = "create"
    try:
        missing = [p for p in (folder, *folder.parents) if not p.is_dir()]
        blocking = next((p for p in missing if p.exists()), None)
        if blocking is not None:
            what = "is a file" if blocking == folder else f"is inside {blocking}, which is a file"
            raise QuantbenchError(f"{option} {folder} {what}; give a folder (created if missing)")
        for parent in reversed(missing):
            parent.mkdir(exist_ok=True)
            created.append(parent)
        doing = "write in"
        fd, probe = tempfile.mkstemp(prefix=".quantbench-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        remove_empty_folders(created)
        reason = exc.strerror or first_line(exc)
        raise QuantbenchError(
            f"{option} {folder}: cannot {doing} the folder ({reason}); give a folder you can write to"
        ) from None
    except QuantbenchError:
        remove_empty_folders(created)
        raise
    return created


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove ``folders`` (outermost first, as :func:`make_folders` returns them) where they are empty,
    innermost first; a folder that holds anything stays, and so do the folders around it. Folders gone
    already are passed over."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return
