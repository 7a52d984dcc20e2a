"""Data loading throughput (samples/s) of the EgoGen DataModule at 256 px, 0 and 2 workers.

Frames are 256 x 455 (the release's 16:9 size on disk), squashed to 256 x 256 with LANCZOS.
"""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write  # noqa: E402

from lego.data import SynthEgoDataModule  # noqa: E402
from lego.synthego import generate  # noqa: E402

SAMPLES = 512


def throughput(root: Path, workers: int) -> float:
    dm = SynthEgoDataModule(root=root, resolution=256, batch_size=32, num_workers=workers,
                            flip_prob=0.5)
    dm.setup("fit")
    loader = dm.train_dataloader()
    seen = 0
    it = iter(loader)
    next(it)  # start the workers before timing
    start = time.perf_counter()
    for batch in it:
        seen += len(batch)
        if seen >= SAMPLES:
            break
    return seen / (time.perf_counter() - start)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root, train=SAMPLES + 64, val=8, size=256, aspect=455 / 256, seed=0,
                 progress=False)
        rates = {f"workers_{w}": round(throughput(root, w), 1) for w in (0, 2)}
    write("data_loading", {"resolution": 256, "frame_on_disk": "256x455 PNG", "batch_size": 32,
                           "samples_per_s": rates})


if __name__ == "__main__":
    main()
