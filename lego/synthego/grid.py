"""Sample grids of (input, action frame) pairs, and of generated frames beside them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from lego.data.io import safe_join
from lego.data.records import open_rgb, read_records

#: Height of the column-title strip of a grid with generated columns.
HEADER = 14


def write_grid(
    records_file: Path,
    frames_dir: Path,
    out: Path,
    n: int = 8,
    cell: int = 128,
    generated: Sequence[tuple[str, Path]] = (),
    description_key: str | None = None,
) -> Path:
    """Write a PNG grid with one row per sample: input | generated ... | action frame | text.

    Args:
        records_file: A ``<name>_<split>.json`` records file.
        frames_dir: The split's frame folder.
        out: The PNG to write.
        n: Number of samples (the first ``n`` in JSON order).
        cell: Side of each frame cell in pixels.
        generated: ``(title, folder)`` of generated frames to show between the input and the
            action frame; a folder holds ``<clip>/<action>/<frame>`` as ``FramesWriter`` writes
            them (the target frame's relative path). With any, the columns get titles.
        description_key: The record field printed under the label (default: the oracle
            description, else ``llava_forecast_finetune``).

    Returns:
        The written path.

    Raises:
        DataFormatError: A frame (input, target or generated) is missing or unreadable; the
            message names the file and the record.
    """
    records = read_records(records_file)[:n]
    titles = ["input", *(title for title, _ in generated), "action frame"]
    top = HEADER if generated else 0
    text_w = 3 * cell
    grid = Image.new("RGB", (len(titles) * cell + text_w, top + cell * len(records)),
                     (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    if generated:
        for col, title in enumerate(titles):
            draw.text((col * cell + 4, 2), title, fill=(0, 0, 0))
    for row, rec in enumerate(records):
        paths = [safe_join(frames_dir, rec.fields["image_0"], rec.where())]
        paths += [safe_join(folder, rec.fields["image_1"], rec.where()) for _, folder in generated]
        paths.append(safe_join(frames_dir, rec.fields["image_1"], rec.where()))
        y = top + row * cell
        for col, path in enumerate(paths):
            frame = open_rgb(path, rec.where()).resize((cell, cell), Image.Resampling.NEAREST)
            grid.paste(frame, (col * cell, y))
        label = rec.fields.get("action", "")
        if description_key is not None:
            desc = rec.fields.get(description_key, "")
        else:
            desc = (rec.fields.get("oracle_description")
                    or rec.fields.get("llava_forecast_finetune") or "")
        lines = [label] + _wrap(desc, 60)
        for k, line in enumerate(lines[: cell // 12]):
            draw.text((len(titles) * cell + 6, y + 4 + 12 * k), line, fill=(0, 0, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out


def _wrap(text: str, width: int) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return lines + ([current] if current else [])
