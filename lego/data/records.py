"""EgoGen records and frames: the records JSON reader and the frame loader (no Lightning).

A records file is ``{clip_id: {action_id: {image_0, image_1, action, ...}}}``; frames are
opened as RGB with every failure reported as a :class:`lego.data.io.DataFormatError` naming the
file and the record. The DataModules (``egogen.py``), callbacks and tools read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from lego.data.io import DataFormatError, load_json

#: Image modes converted to RGB on load. Anything else (16-bit, float, ...) is refused.
CONVERTIBLE_MODES = frozenset({"RGB", "L", "LA", "RGBA", "RGBa", "P", "PA", "CMYK", "YCbCr", "1"})
#: Fields every record must carry.
REQUIRED_FIELDS = ("image_0", "image_1", "action")


@dataclass(frozen=True)
class Record:
    """One entry ``json[clip_id][action_id]`` of a records file."""

    clip_id: str
    action_id: str
    fields: dict[str, Any]
    source: Path

    @property
    def sample_id(self) -> str:
        """``"<clip_id>/<action_id>"``."""
        return f"{self.clip_id}/{self.action_id}"

    def where(self) -> str:
        """Human-readable location of the record, for error messages."""
        return f"{self.source}: record {self.sample_id!r}"


def read_records(path: Path) -> list[Record]:
    """Read a nested ``{clip_id: {action_id: record}}`` records file, in insertion order.

    Args:
        path: The ``<name>_<split>.json`` file.

    Returns:
        The records, in JSON order (which drives inference order, as in the paper's code).

    Raises:
        DataFormatError: If the file is malformed or not nested as expected.
    """
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict):
        raise DataFormatError(
            f"{path}: expected a JSON object {{clip_id: {{action_id: record}}}}, "
            f"got {type(data).__name__}"
        )
    records = []
    for clip_id, actions in data.items():
        if not isinstance(actions, dict):
            raise DataFormatError(
                f"{path}: clip {clip_id!r} must map action ids to records, "
                f"got {type(actions).__name__}"
            )
        for action_id, fields in actions.items():
            if not isinstance(fields, dict):
                raise DataFormatError(
                    f"{path}: record {clip_id}/{action_id!r} must be an object, "
                    f"got {type(fields).__name__}"
                )
            records.append(Record(str(clip_id), str(action_id), fields, path))
    return records


def open_rgb(path: Path, where: str, decode: bool = True) -> Image.Image:
    """Open an image as RGB, converting grayscale, RGBA and palette images.

    Args:
        path: The image file.
        where: The file and record it belongs to, for the error message.
        decode: Decode the pixels now (otherwise only the header is read).

    Returns:
        The RGB image (or the lazily opened image when ``decode`` is False).

    Raises:
        DataFormatError: If the file is missing, unreadable, or has an unsupported mode.
    """
    try:
        image = Image.open(path)
    except FileNotFoundError as err:
        raise DataFormatError(f"{where}: frame not found: {path}") from err
    except Image.DecompressionBombError as err:
        raise DataFormatError(
            f"{where}: frame {path} is too large to decode safely ({err}); resize it, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if the file is trusted"
        ) from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataFormatError(f"{where}: unreadable frame {path} ({err})") from err
    if image.mode not in CONVERTIBLE_MODES:
        raise DataFormatError(
            f"{where}: frame {path} has unsupported image mode {image.mode!r} "
            "(expected RGB, grayscale, RGBA or palette)"
        )
    if not decode:
        return image
    try:
        image.load()
    except Image.DecompressionBombError as err:
        raise DataFormatError(
            f"{where}: frame {path} is too large to decode safely ({err})"
        ) from err
    except (OSError, ValueError, SyntaxError) as err:
        raise DataFormatError(f"{where}: corrupt frame {path} ({err})") from err
    if image.mode in ("RGBA", "LA", "PA", "RGBa") or (
        image.mode == "P" and "transparency" in image.info
    ):
        # Composite transparency onto black, as most viewers would show a video frame.
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


#: The bytes an intact file of a format ends with (within its last few bytes).
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
_TAIL = 64


def check_complete(image: Image.Image, path: Path, where: str) -> None:
    """Refuse a JPEG or PNG file that was cut short, without decoding it.

    Reading the last bytes is as cheap as reading the header, and finds what a header check
    cannot: a frame truncated by an interrupted copy, which would otherwise pass setup and stop
    training mid-epoch.

    Args:
        image: The opened (not decoded) image, for its format.
        path: Its file.
        where: The file and record it belongs to, for the error message.

    Raises:
        DataFormatError: If the file lacks its format's end marker.
    """
    marker = _END_MARKERS.get(image.format or "")
    if marker is None:
        return
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - _TAIL))
            tail = handle.read()
    except OSError as err:
        raise DataFormatError(f"{where}: unreadable frame {path} ({err})") from err
    if marker not in tail:
        raise DataFormatError(
            f"{where}: truncated frame {path} (the {image.format} file has no end marker)"
        )


def frame_to_tensor(image: Image.Image, resolution: int) -> Tensor:
    """Squash-resize an RGB image to ``resolution`` x ``resolution`` (LANCZOS) in [-1, 1].

    Args:
        image: An RGB image.
        resolution: Output side length in pixels.

    Returns:
        A ``3 x resolution x resolution`` float32 tensor in [-1, 1].
    """
    if image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1.0).contiguous()
