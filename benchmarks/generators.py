"""Seconds per image and UNet evaluations per image of every generator, at its SynthEgo settings.

Each generator is built from its shipped SynthEgo config (``configs/synthego/<method>.yaml``:
sampler, steps, guidance, strength ...) on the shipped ``pretrained/synthego-sd`` (IP2P and LEGO
with ``conv_in`` widened, untrained, which does not change their cost; LEGO with random VLM
features of the config's width) and generates a batch of 64 x 64 frames. A UNet evaluation is one
image's row through the UNet (classifier-free guidance with three branches costs three per step).
Run manually: ``OMP_NUM_THREADS=1 python benchmarks/generators.py``.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
import torch  # noqa: E402
import yaml  # noqa: E402
from common import write  # noqa: E402

import lego.models  # noqa: E402
from tests.models.editing.editing_helpers import make_batch  # noqa: E402

BATCH, SIZE, REPEATS = 8, 64, 2
METHODS = ("copy_input", "sdedit", "proxedit", "ip2p", "lego")
FIT_ONLY = {"learning_rate", "ema_decay", "timestep_sampling", "timestep_logit_mean",
            "text_cache_size", "conditioning_dropout", "lr_warmup_steps", "weight_decay"}


def build(method: str):
    config = yaml.safe_load(Path(f"configs/synthego/{method}.yaml").read_text())
    model = config["model"]
    options = {k: v for k, v in (model.get("init_args") or {}).items() if k not in FIT_ONLY}
    module = getattr(lego.models, model["class_path"])(**options)
    if hasattr(module, "configure_model"):
        module.configure_model()
    return module.eval(), options


def main() -> None:
    torch.manual_seed(0)
    results = {}
    for method in METHODS:
        module, options = build(method)
        batch = make_batch(BATCH, size=SIZE, dim=options.get("vlm_dim"))
        rows = []
        unet = getattr(module, "unet", None)
        hook = None
        if unet is not None:
            hook = unet.register_forward_hook(
                lambda m, args, out, rows=rows: rows.append(args[0].shape[0])
            )
        with torch.no_grad():
            module.generate(batch)  # warm-up, and the UNet evaluations of one call
            evaluations = sum(rows) / BATCH
            best = float("inf")
            for _ in range(REPEATS):
                start = time.perf_counter()
                module.generate(batch)
                best = min(best, time.perf_counter() - start)
        if hook is not None:
            hook.remove()
        results[method] = {
            "class": type(module).__name__,
            "steps": options.get("num_inference_steps"),
            "seconds_per_image": round(best / BATCH, 4),
            "unet_evaluations_per_image": evaluations,
        }
        print(method, results[method], flush=True)
    write("generators", {"batch": BATCH, "size": SIZE, "methods": results})


if __name__ == "__main__":
    main()
