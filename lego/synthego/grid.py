"""Sample grids of (input, action frame) pairs for a quick look at a dataset."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from lego.data.egogen import open_rgb, read_records, safe_join


def write_grid(
    records_file: Path, frames_dir: Path, out: Path, n: int = 8, cell: int = 128
) -> Path:
    """Write a PNG grid with one row per sample: input frame | action frame | label.

    Args:
        records_file: A ``<name>_<split>.json`` records file.
        frames_dir: The split's frame folder.
        out: The PNG to write.
        n: Number of samples (the first ``n`` in JSON order).
        cell: Side of each frame cell in pixels.

    Returns:
        The written path.
    """
    records = read_records(records_file)[:n]
    text_w = 3 * cell
    grid = Image.new("RGB", (2 * cell + text_w, cell * len(records)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for row, rec in enumerate(records):
        for col, key in enumerate(("image_0", "image_1")):
            path = safe_join(frames_dir, rec.fields[key], rec.where())
            frame = open_rgb(path, rec.where()).resize((cell, cell), Image.Resampling.NEAREST)
            grid.paste(frame, (col * cell, row * cell))
        label = rec.fields.get("action", "")
        desc = (
            rec.fields.get("oracle_description") or rec.fields.get("llava_forecast_finetune") or ""
        )
        lines = [label] + _wrap(desc, 60)
        for k, line in enumerate(lines[: cell // 12]):
            draw.text((2 * cell + 6, row * cell + 4 + 12 * k), line, fill=(0, 0, 0))
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
