"""Safe file access shared by the data readers: one error type, JSON reading, path joining.

Every reader of a dataset or feature cache reports a bad file through :class:`DataFormatError`,
whose message names the file and, where there is one, the record.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from lego.errors import UserError


class DataFormatError(UserError, ValueError):
    """A file of an EgoGen-format dataset is missing, malformed or unsafe.

    The message always names the file and, where there is one, the record.
    """


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
