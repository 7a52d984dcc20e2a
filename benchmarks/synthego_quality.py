"""SynthEgo recipe quality: train a SynthEgo config, then score sampled val frames.

Trains ``--config`` (default ``configs/synthego/lego.yaml``) for ``--steps`` steps through the
same ``LegoCLI`` as ``python -m lego fit`` (extra ``--set key=value`` overrides are passed on),
then samples every val pair with the EMA weights at several guidance settings and reports the
SynthEgo action score (share of frames with the acting hand at the target object, hand error in
px) and PSNR, beside copying the input and the ground truth itself. It needs the SynthEgo data
and backbones (``make demo`` writes both) and takes as long as the training, so ``make bench``
leaves it out; run it manually::

    python benchmarks/synthego_quality.py --steps 2000 --name lego
    python benchmarks/synthego_quality.py --accelerator gpu --set model.init_args.learning_rate=3e-4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import torch  # noqa: E402
from common import write  # noqa: E402

from lego.cli import LegoCLI  # noqa: E402
from lego.metrics import MeanPSNR, SynthEgoActionScore  # noqa: E402

GUIDANCE = [(7.5, 1.5), (3.0, 1.5), (1.5, 1.2), (1.0, 1.0)]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/synthego/lego.yaml")
    parser.add_argument("--data", default="data/synthego", help="SynthEgo root")
    parser.add_argument("--pretrained", default="pretrained/synthego-sd")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--name", default="synthego_quality", help="result / log name")
    parser.add_argument("--logs", default="logs", help="TensorBoard root")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra LightningCLI override, e.g. model.init_args.ema_decay=null")
    parser.add_argument("--guidance", default=",".join(f"{t}:{i}" for t, i in GUIDANCE),
                        help="text:image guidance pairs to sample with, comma separated")
    return parser.parse_args(argv)


def score(frames_fn, loader, metadata: dict, device: torch.device) -> dict:
    action, psnr = SynthEgoActionScore(metadata).to(device), MeanPSNR().to(device)
    for batch in loader:
        frames = frames_fn(batch).float().clamp(0, 1).to(device)
        target = ((batch.target_frames.float() + 1) / 2).to(device)
        action.update(frames, target, list(batch.sample_ids))
        psnr.update(frames, target)
    result = {k: round(float(v), 2) for k, v in action.compute().items()}
    value = float(psnr.compute())
    result["psnr"] = round(value, 2) if value != float("inf") else None  # identical frames
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    data = Path(args.data)
    overrides = [f"--{kv}" for kv in args.set]
    start = time.perf_counter()
    cli = LegoCLI(
        args=[
            "fit",
            "--config", args.config,
            f"--trainer.max_steps={args.steps}",
            f"--trainer.accelerator={args.accelerator}",
            "--trainer.enable_progress_bar=false",
            "--trainer.callbacks=[]",
            f"--trainer.logger.init_args.save_dir={args.logs}",
            f"--trainer.logger.init_args.name={args.name}",
            f"--data.init_args.root={data}",
            f"--model.init_args.pretrained={args.pretrained}",
            *overrides,
        ]
    )
    train_seconds = time.perf_counter() - start
    model, datamodule = cli.model, cli.datamodule
    device = model.device
    datamodule.setup("test")
    loader = datamodule.test_dataloader()
    metadata = json.loads((data / "synthego_metadata.json").read_text())
    results = {
        "ground_truth": score(lambda b: (b.target_frames + 1) / 2, loader, metadata, device),
        "copy_input": score(lambda b: (b.input_frames + 1) / 2, loader, metadata, device),
    }
    model.eval()
    model.on_test_epoch_start()  # EMA weights in, as test does
    sample_start = time.perf_counter()
    for pair in args.guidance.split(","):
        text_scale, image_scale = (float(x) for x in pair.split(":"))
        model.text_guidance_scale, model.image_guidance_scale = text_scale, image_scale
        with torch.no_grad():
            results[f"guidance_{text_scale}_{image_scale}"] = score(
                lambda b: model.generate(model.transfer_batch_to_device(b, device, 0)),
                loader, metadata, device)
    write(
        f"synthego_quality_{args.name}",
        {
            "config": args.config,
            "overrides": args.set,
            "steps": args.steps,
            "trained_steps": int(cli.trainer.global_step),
            "accelerator": args.accelerator,
            "val_pairs": len(loader.dataset),
            "train_seconds": round(train_seconds, 1),
            "sample_seconds_all_settings": round(time.perf_counter() - sample_start, 1),
            "final_train_loss": round(float(cli.trainer.callback_metrics.get(
                "train/loss", torch.tensor(float("nan")))), 5),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
