"""SynthEgo generation rate (pairs/s) with 1 and 2 worker processes."""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write  # noqa: E402

from lego.synthego import generate  # noqa: E402

PAIRS = 2000


def main():
    rates = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            generate(Path(tmp), train=PAIRS, val=200, size=64, seed=0, workers=workers,
                     progress=False)
            rates[f"workers_{workers}"] = round((PAIRS + 200) / (time.perf_counter() - start), 1)
    write("synthego_generation", {"pairs": PAIRS + 200, "size": 64, "pairs_per_s": rates})


if __name__ == "__main__":
    main()
