"""Evaluation protocols: how generated frames become the images that are scored.

``official`` reproduces the paper's pipeline to the letter: the generated frame is resized back
to ``256 x round(256 W / H)`` (bicubic, W and H from the dataset metadata), min-max stretched per
image to uint8 (truncating), written as JPEG at quality 75 and read back; LPIPS is fed images in
[0, 1] although it expects [-1, 1]; FID compares the whole ground-truth folder with the whole
generated folder. ``clean`` (the default) keeps the resize but clamps instead of stretching,
rounds to uint8, stores losslessly (PNG) and feeds LPIPS [-1, 1]; FID uses the scored pairs.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image
from torch import Tensor

ProtocolName = Literal["official", "clean"]


@dataclass(frozen=True)
class Protocol:
    """The choices that distinguish the official pipeline from the clean one.

    Attributes:
        name: ``official`` or ``clean``.
        stretch: ``minmax`` (per-image ``(g - min) / (max - min) * 255``, truncated to uint8) or
            ``clamp`` (``round(clamp(g, 0, 1) * 255)``).
        file_format: How generated frames are stored: ``jpeg`` (lossy, read back) or ``png``.
        jpeg_quality: JPEG quality (PIL's default, 75, in the official pipeline).
        lpips_input: ``unit``: LPIPS gets [0, 1] images unnormalised (official bug);
            ``signed``: LPIPS gets [-1, 1] as it expects.
        output_height: Height generated frames are resized to (width from the metadata aspect).
        fid_sets: ``folders``: every ground-truth frame vs every generated frame (official);
            ``pairs``: only the scored (generated, ground truth) pairs.
    """

    name: ProtocolName
    stretch: Literal["minmax", "clamp"]
    file_format: Literal["jpeg", "png"]
    jpeg_quality: int
    lpips_input: Literal["unit", "signed"]
    output_height: int
    fid_sets: Literal["folders", "pairs"]

    def as_dict(self) -> dict[str, Any]:
        """The protocol as a JSON-serialisable dict (recorded in every result file)."""
        return asdict(self)

    @property
    def suffix(self) -> str:
        """File suffix of stored generated frames."""
        return ".jpg" if self.file_format == "jpeg" else ".png"


PROTOCOLS: dict[str, Protocol] = {
    "official": Protocol("official", "minmax", "jpeg", 75, "unit", 256, "folders"),
    "clean": Protocol("clean", "clamp", "png", 75, "signed", 256, "pairs"),
}


def get_protocol(name: str) -> Protocol:
    """Return the protocol called ``name``.

    Raises:
        ValueError: If the name is unknown.
    """
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; choose one of {sorted(PROTOCOLS)}") from None


def output_size(height: int, width: int, output_height: int = 256) -> tuple[int, int]:
    """Size ``(H, W)`` a generated frame is resized to: ``output_height`` x round(aspect).

    Args:
        height: Original frame height (from the metadata).
        width: Original frame width (from the metadata).
        output_height: Output height (256 in the paper).

    Returns:
        ``(output_height, round(output_height * width / height))``.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height} x {width}")
    return output_height, int(round(output_height * width / height))


def to_uint8(frame: Tensor, stretch: Literal["minmax", "clamp"]) -> np.ndarray:
    """Quantise a ``3 x H x W`` float frame to an ``H x W x 3`` uint8 array.

    Args:
        frame: The frame (any range for ``minmax``; [0, 1] expected for ``clamp``).
        stretch: ``minmax`` (official, truncating) or ``clamp`` (rounding).

    Returns:
        The uint8 image.
    """
    x = frame.detach().float().cpu()
    if stretch == "minmax":
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo).clamp_min(1e-12) * 255.0
        array = x.permute(1, 2, 0).numpy().astype(np.uint8)  # truncation, as numpy's astype
    else:
        array = x.clamp(0.0, 1.0).mul(255.0).round().permute(1, 2, 0).numpy().astype(np.uint8)
    return np.ascontiguousarray(array)


def encode(image: np.ndarray, protocol: Protocol) -> bytes:
    """Encode an ``H x W x 3`` uint8 image as the protocol stores it (JPEG or PNG)."""
    buffer = io.BytesIO()
    pil = Image.fromarray(image)
    if protocol.file_format == "jpeg":
        pil.save(buffer, format="JPEG", quality=protocol.jpeg_quality)
    else:
        pil.save(buffer, format="PNG")
    return buffer.getvalue()


def decode(data: bytes) -> Tensor:
    """Decode image bytes into a ``3 x H x W`` float tensor in [0, 1]."""
    with Image.open(io.BytesIO(data)) as pil:
        return pil_to_tensor01(pil.convert("RGB"))


def pil_to_tensor01(image: Image.Image) -> Tensor:
    """Convert an RGB PIL image to a ``3 x H x W`` float tensor in [0, 1] (like ``ToTensor``)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def resize_bicubic(frame: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic-resize a ``3 x H x W`` frame to ``size`` (no-op if it already has that size)."""
    if tuple(frame.shape[-2:]) == tuple(size):
        return frame
    return F.interpolate(frame[None].float(), size=size, mode="bicubic", align_corners=False)[0]


def finalize(frame: Tensor, protocol: Protocol, size: tuple[int, int] | None = None) -> np.ndarray:
    """Turn a generated frame into the uint8 image the protocol writes to disk.

    Args:
        frame: ``3 x H x W`` generated frame in [0, 1].
        protocol: The evaluation protocol.
        size: Output ``(H, W)`` (from :func:`output_size`), or None to keep the frame's size.

    Returns:
        The ``H x W x 3`` uint8 image (before JPEG/PNG encoding).
    """
    if size is not None:
        frame = resize_bicubic(frame, size)
    return to_uint8(frame, protocol.stretch)


def postprocess(frame: Tensor, protocol: Protocol, size: tuple[int, int] | None = None) -> Tensor:
    """The generated frame exactly as it is scored: finalised, encoded and read back.

    Args:
        frame: ``3 x H x W`` generated frame in [0, 1].
        protocol: The evaluation protocol.
        size: Output ``(H, W)``, or None to keep the frame's size.

    Returns:
        ``3 x H' x W'`` float tensor in [0, 1], on the frame's device.
    """
    image = finalize(frame, protocol, size)
    if protocol.file_format == "jpeg":
        return decode(encode(image, protocol)).to(frame.device)
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255.0).to(frame.device)


def save_frame(
    frame: Tensor, path: Path, protocol: Protocol, size: tuple[int, int] | None = None
) -> Path:
    """Write a generated frame as the protocol stores it (the suffix follows the format).

    Args:
        frame: ``3 x H x W`` generated frame in [0, 1].
        path: Target path; its suffix is replaced by ``.jpg`` or ``.png`` unless it already is one
            of the format's suffixes (the official pipeline keeps the GT name, ``.jpg``).
        protocol: The evaluation protocol.
        size: Output ``(H, W)``, or None.

    Returns:
        The written path.
    """
    path = Path(path)
    valid = (".jpg", ".jpeg") if protocol.file_format == "jpeg" else (".png",)
    if path.suffix.lower() not in valid:
        path = path.with_suffix(protocol.suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(finalize(frame, protocol, size), protocol))
    return path
