"""Model cards of the SynthEgo backbones: how each was made and what it scores, beside the weights.

A card is the folder's ``README.md`` (the Hugging Face convention: YAML front matter, then text)
plus ``training.json`` with the same facts in machine-readable form.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch


def machine() -> dict[str, Any]:
    """The machine a backbone was trained on (processor, cores, torch threads, versions)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _front_matter(fields: dict[str, Any]) -> str:
    lines = ["---"]
    for key, value in fields.items():
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines += [f"  - {v}" for v in value]
        else:
            lines.append(f"{key}: {value}")
    return "\n".join([*lines, "---", ""])


def _table(values: dict[str, Any]) -> str:
    rows = ["| | |", "|---|---|"]
    rows += [f"| {k} | {v} |" for k, v in values.items()]
    return "\n".join(rows)


def write_card(
    out_dir: Path,
    title: str,
    summary: str,
    library: str,
    usage: str,
    command: str,
    settings: dict[str, Any],
    training: dict[str, Any],
    scores: dict[str, Any],
    notes: str = "",
) -> Path:
    """Write ``README.md`` and ``training.json`` into a backbone folder.

    Args:
        out_dir: The backbone folder.
        title: Card title.
        summary: What the backbone is and stands in for (Markdown).
        library: ``diffusers`` or ``transformers``.
        usage: A Python snippet that loads it.
        command: The command that re-creates it.
        settings: Architecture and training settings.
        training: Steps, samples, wall time, machine.
        scores: What it scores on held-out scenes (name -> value with unit).
        notes: Anything else a user should know (Markdown).

    Returns:
        The card's path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"title": title, "command": command, "settings": settings, "training": training,
              "scores": scores}
    (out_dir / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    parts = [
        _front_matter({"library_name": library, "license": "apache-2.0",
                       "tags": ["lego", "synthego", "egocentric"]}),
        f"# {title}\n",
        summary.strip() + "\n",
        "## Use\n",
        f"```python\n{usage.strip()}\n```\n",
        "## How it was made\n",
        f"```bash\n{command}\n```\n",
        _table({**training, **{f"setting: {k}": v for k, v in settings.items()}}) + "\n",
        "## Scores (held-out scenes)\n",
        _table(scores) + "\n",
    ]
    if notes:
        parts += ["## Notes\n", notes.strip() + "\n"]
    path = out_dir / "README.md"
    path.write_text("\n".join(parts))
    return path
