"""The shipped SynthEgo backbones: how they were trained (their cards) and what they score now.

Re-scores ``pretrained/synthego-sd`` (palette scores of frames generated from held-out captions,
with the stock ``StableDiffusionPipeline``) and ``pretrained/synthego-vlm`` (grounding: colour,
place and hand of the object asked about in held-out crowded scenes), and writes them beside the
training figures of each model card to ``benchmarks/results/zoo.json``. A few minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write  # noqa: E402

from lego.models.instruct.network import load_vlm  # noqa: E402
from lego.zoo.scenes import render_pool  # noqa: E402
from lego.zoo.text_to_image import TextToImageRecipe, score_pipeline  # noqa: E402
from lego.zoo.vlm import VLMRecipe, grounding_scores  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("pretrained"))
    args = parser.parse_args(argv)
    result = {}
    sd, vlm = args.root / "synthego-sd", args.root / "synthego-vlm"
    record = json.loads((sd / "training.json").read_text())
    recipe = TextToImageRecipe(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in record["settings"].items()})
    start = time.perf_counter()
    scores = score_pipeline(sd, recipe)
    result["text_to_image"] = {"card": record["training"], "scores_now": scores,
                               "score_seconds": round(time.perf_counter() - start, 1)}
    record = json.loads((vlm / "training.json").read_text())
    recipe_vlm = VLMRecipe(**record["settings"])
    start = time.perf_counter()
    model, processor = load_vlm(vlm)
    pool = render_pool(recipe_vlm.seed, recipe_vlm.eval_scenes, part="zooval", progress=False)
    result["vlm"] = {"card": record["training"],
                     "scores_now": grounding_scores(model, processor, pool, recipe_vlm.seed),
                     "score_seconds": round(time.perf_counter() - start, 1)}
    write("zoo", result)


if __name__ == "__main__":
    main()
