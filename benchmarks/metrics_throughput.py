"""Images per second of the evaluation suite and of each metric (CPU, random weights).

Two settings:
- ``tiny``: the suite as the tests build it (tiny EgoVLP / CLIP / BLIP, real-size Inception and
  LPIPS trunks), at the paper's scored size 256 x 455;
- ``full``: the real architectures at full size where that is cheap to build (EgoVLP ViT-B/16 +
  DistilBERT, 4 and 16 frames; Inception; LPIPS alex / vgg / squeeze; PSNR).

Run: ``OMP_NUM_THREADS=1 python benchmarks/metrics_throughput.py`` (writes
``benchmarks/results/metrics_throughput.json``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write  # noqa: E402
from lego.metrics.egovlp import EgoVLP, EgoVLPConfig, EgoVLPSimilarity  # noqa: E402
from lego.metrics.suite import PAPER_METRICS, EditMetricSuite, ScoredPair  # noqa: E402
from tests.metrics.tiny_weights import write_metric_weights  # noqa: E402

SIZE = (256, 455)


def _pairs(n: int) -> list[ScoredPair]:
    g = torch.Generator().manual_seed(0)
    return [ScoredPair(f"c{i}/a0", torch.rand(3, *SIZE, generator=g),
                       torch.rand(3, *SIZE, generator=g), torch.rand(3, *SIZE, generator=g),
                       "the man picks up the red cup") for i in range(n)]


def _rate(fn, n: int, repeat: int = 2) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    torch.set_num_threads(1)
    n = 8
    pairs = _pairs(n)
    results: dict = {"image_size": list(SIZE), "images_per_run": n, "tiny": {}, "full": {}}
    with tempfile.TemporaryDirectory() as tmp:
        weights = write_metric_weights(Path(tmp))
        suite = EditMetricSuite(list(PAPER_METRICS), weights_dir=weights)
        results["tiny"]["suite_all"] = _rate(lambda: suite.update(pairs), n)
        for name in PAPER_METRICS:
            single = EditMetricSuite([name], weights_dir=weights)
            results["tiny"][name] = _rate(lambda s=single: s.update(pairs), n)
            print(name, results["tiny"][name], flush=True)
        for frames in (4, 16):
            torch.manual_seed(0)
            model = EgoVLP(EgoVLPConfig(num_frames=frames)).eval()
            path = Path(tmp) / f"full{frames}.pth"
            torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}},
                       path)
            del model
            metric = EgoVLPSimilarity(path, num_frames=frames)
            gen = torch.stack([p.generated for p in pairs[:2]])
            tgt = torch.stack([p.target for p in pairs[:2]])
            results["full"][f"egovlp_{frames}f"] = _rate(
                lambda m=metric, g=gen, t=tgt: m.update(g, t), 2, repeat=1)
            print(f"egovlp full {frames}f", results["full"][f"egovlp_{frames}f"], flush=True)
            del metric
        for name in ("psnr", "fid", "lpips_alex", "lpips_vgg", "lpips_squeeze"):
            results["full"][name] = results["tiny"][name]  # real architectures in both settings
    results["note"] = ("images/s on CPU with 1 thread; 'full' EgoVLP scores 2 clips (generated "
                       "and ground truth) per image; FID and LPIPS use their real architectures "
                       "in both settings")
    write("metrics_throughput", results)


if __name__ == "__main__":
    main()
