"""Files and folders that hold personal data or keys: created owner-only.

The SQLite database (and so its WAL, which SQLite creates with the database file's
mode), media, exports and key files are readable by the service's own user only:
0600 files in 0700 folders. They are created so from the first byte, never created
with the umask's mode and narrowed afterwards.

A folder that already exists keeps the mode its owner chose (a deployment may share
one on purpose); a file written through :func:`write_private` is 0600 whatever it was.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def private_folder(path: Path | str) -> Path:
    """``path`` and every missing parent, created 0700 (``mkdir -p`` gives parents 0755)."""
    folder = Path(path)
    missing: list[Path] = []
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for candidate in reversed(missing):
        try:
            candidate.mkdir(mode=FOLDER_MODE)
        except FileExistsError:
            continue  # another process made it first
    return folder


def create_private_file(path: Path | str) -> bool:
    """Create ``path`` empty and 0600 unless it exists; ``True`` if it was created."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    os.close(descriptor)
    return True


def write_private(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path``, a 0600 file (one that existed is narrowed to 0600)."""
    with os.fdopen(_truncated_private(path), "wb") as handle:
        handle.write(data)


def open_private_for_writing(path: Path | str) -> IO[str]:
    """A UTF-8 text handle writing ``path`` from its start, a 0600 file (one that existed
    is emptied and narrowed to 0600): for what is written as it is produced (exports)."""
    return os.fdopen(_truncated_private(path), "w", encoding="utf-8")


def _truncated_private(path: Path | str) -> int:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.fchmod(descriptor, FILE_MODE)
    return descriptor


def open_private_for_append(path: Path | str) -> IO[str]:
    """A text handle appending to ``path``, which is created 0600 if missing (lock files)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    return os.fdopen(descriptor, "a")
