"""Sampling speed: the module's ``generate`` vs calling the stock InstructPix2Pix pipeline directly.

``generate`` samples through that same diffusers pipeline (with the prompt embeddings it
assembles), so the ratio measures the module's overhead: prompt encoding, context assembly and
decoding. Both sample the same tiny model (small AutoencoderKL, (32, 64) UNet, 32 x 32 frames)
with the same scheduler, steps and guidance; the figure is images/s and the ratio (goal >= 1).
Run manually: ``OMP_NUM_THREADS=1 python benchmarks/diffusion_sampling.py``.
"""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import torch  # noqa: E402
from common import write  # noqa: E402

from lego.batch import EgoBatch, EgoSample  # noqa: E402
from lego.interop import build_pipeline  # noqa: E402
from lego.models.editing import InstructPix2PixModule  # noqa: E402
from lego.models.editing.bootstrap import write_diffusion_backbone  # noqa: E402
from lego.models.editing.guidance import sample_generators  # noqa: E402
from lego.synthego import vocabulary  # noqa: E402

BATCH, STEPS, SIZE, REPEATS = 8, 20, 32, 5


def batch() -> EgoBatch:
    g = torch.Generator().manual_seed(0)
    samples = [
        EgoSample(
            sample_id=f"c{i}/a{i}",
            clip_id=f"c{i}",
            action_id=f"a{i}",
            image_0="x.png",
            image_1="y.png",
            input_frame=torch.rand(3, SIZE, SIZE, generator=g) * 2 - 1,
            target_frame=None,
            action="pick up the red cup",
            raw_action="pick up the red cup",
            text="pick up the red cup",
        )
        for i in range(BATCH)
    ]
    return EgoBatch.collate(samples)


def timed(fns: dict) -> dict:
    """Best-of-REPEATS seconds per call, the candidates interleaved (a shared machine is noisy)."""
    best = dict.fromkeys(fns, float("inf"))
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(REPEATS):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = write_diffusion_backbone(Path(tmp), vocabulary(), resolution=SIZE, autoencoder="kl")
        module = InstructPix2PixModule(
            pretrained=str(root), ema_decay=None, num_inference_steps=STEPS
        )
        module.configure_model()
        module.eval()
        data = batch()
        pipe = build_pipeline(module)  # stock StableDiffusionInstructPix2PixPipeline
        pipe.set_progress_bar_config(disable=True)

        def stock():
            pipe(
                prompt=list(data.texts),
                image=(data.input_frames + 1) / 2,
                num_inference_steps=STEPS,
                generator=sample_generators(data.sample_ids, module.seed),
                output_type="pt",
            )

        best = timed({"ours": lambda: module.generate(data), "stock": stock})
        ours_s, stock_s = best["ours"], best["stock"]
    write(
        "diffusion_sampling",
        {
            "setup": f"batch {BATCH}, {SIZE}x{SIZE} px, Euler-ancestral {STEPS} steps, 3-way CFG",
            "ours_images_per_s": round(BATCH / ours_s, 2),
            "stock_ip2p_pipeline_images_per_s": round(BATCH / stock_s, 2),
            "ratio_ours_over_stock": round(stock_s / ours_s, 3),
        },
    )


if __name__ == "__main__":
    main()
