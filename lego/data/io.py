"""Safe file access shared by the data readers: one error type, JSON reading, path joining.

Every reader of a dataset or feature cache reports a bad file through :class:`DataFormatError`,
whose message names the file and, where there is one, the record.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from lego.errors import UserError


class DataFormatError(UserError, ValueError):
    """A file of an EgoGen-format dataset is missing, malformed or unsafe.

    The message always names the file and, where there is one, the record.
    """


class OutputError(UserError, OSError):
    """An output folder cannot be created or written; the message names it and its option."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: Path | str, dest: Path | str) -> None:
    """Move a finished temporary file onto ``dest`` atomically, readable as a normal file.

    Temporary files (``tempfile.mkstemp``, safetensors) are created with mode 0600; the
    published file gets the mode an ordinary new file would (0666 less the umask), so a
    feature cache or a frames folder can be shared with a group.

    Args:
        tmp: The complete temporary file, in the folder of ``dest``.
        dest: The final path.
    """
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, dest)


def writable_dir(path: Path, option: str) -> Path:
    """Create ``path`` if needed and check that files can be written in it.

    Called at setup by everything that writes results, so an unwritable folder is reported
    before any work is done, not after the first batch.

    Args:
        path: The folder.
        option: The option that names it, for the message (e.g. ``FramesWriter.output_dir``).

    Returns:
        The folder.

    Raises:
        OutputError: If the folder cannot be created or written.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise OutputError(
            f"{option}: cannot write to {path} ({err.strerror or err}); choose a folder you can "
            "write to"
        ) from err
    return path


def load_json(path: Path) -> Any:
    """Read a JSON file, turning every failure into a :class:`DataFormatError` naming the file.

    Args:
        path: The file.

    Returns:
        The parsed JSON value.

    Raises:
        DataFormatError: If the file is missing, unreadable or not valid JSON.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise DataFormatError(f"{path}: file not found") from err
    except (OSError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{path}: cannot read file ({err})") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFormatError(
            f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from err


def safe_join(base: Path, relative: str, where: str) -> Path:
    """Join a relative path from a data file onto ``base``, refusing paths that escape it.

    Args:
        base: The folder the path is relative to.
        relative: The path as written in the data file (POSIX separators).
        where: The file and record the path comes from, for the error message.

    Returns:
        The joined path.

    Raises:
        DataFormatError: If the path is empty, absolute, or climbs out of ``base``.
    """
    if not isinstance(relative, str) or not relative.strip():
        raise DataFormatError(f"{where}: empty or non-string frame path {relative!r}")
    posix = PurePosixPath(relative.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (posix.parts and ":" in posix.parts[0]):
        raise DataFormatError(f"{where}: unsafe frame path {relative!r} escapes {base}")
    return base.joinpath(*posix.parts)
