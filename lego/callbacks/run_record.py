"""What produced a run's frames: the generator's class, hyper-parameters and checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer


def generator_record(trainer: Trainer) -> dict[str, Any]:
    """The generator of the running stage, as JSON-safe values.

    Written into ``metrics.json`` (so an ablation table can be rebuilt from the runs alone) and
    into the frames folder's manifest (so a folder's frames are known to be one run's).

    Args:
        trainer: The trainer running the stage.

    Returns:
        ``{"class": dotted name, "hparams": {...}, "checkpoint": path or None,
        "checkpoint_file": {"size", "mtime"} or None}``.
    """
    module = trainer.lightning_module
    cls = type(module)
    hparams = json.loads(json.dumps(dict(getattr(module, "hparams", {})), default=str))
    ckpt = trainer.ckpt_path
    stat = None
    if ckpt and Path(ckpt).is_file():
        info = Path(ckpt).stat()
        stat = {"size": info.st_size, "mtime": info.st_mtime}
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "hparams": hparams,
        "checkpoint": ckpt,
        "checkpoint_file": stat,
    }
