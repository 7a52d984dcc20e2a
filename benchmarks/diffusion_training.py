"""Training speed: the Lightning module's step vs a plain PyTorch loop doing the same step.

Same tiny SynthEgo backbone (pixel-unshuffle autoencoder, (32, 64) UNet), batch 32 at 64 x 64,
``prediction_type: sample``. Reports steps/s of ``Trainer.fit`` (logging, EMA and grad-norm
included) and of a hand-written loop (encode, noise, dropout, UNet, MSE, AdamW; no EMA), their
ratio (goal >= 0.95), the time per step with and without the latent / prompt caches, and peak
RSS. Run manually: ``OMP_NUM_THREADS=1 python benchmarks/diffusion_training.py``.

``--preset sd15`` (for a GPU: ``--accelerator gpu --precision bf16-mixed``) instead builds random
weights with Stable Diffusion 1.5's shapes (860 M UNet, ``AutoencoderKL``, CLIP ViT-L/14 text
encoder) at 256 px, the paper's resolution, and reports the time per sample without caches, with
the prompt cache, and with prompt and latent caches (goal: latent cache <= 0.55x), plus peak GPU
memory. The latent cache is warm after the first epoch, as it is from the second epoch of a run.
"""

import argparse
import gc
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402, N812
from common import write  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from lego.batch import EgoBatch, EgoSample  # noqa: E402
from lego.models.editing import InstructPix2PixModule  # noqa: E402
from lego.models.editing.bootstrap import write_diffusion_backbone  # noqa: E402
from lego.models.editing.sd15 import SD15_TEXT_ENCODER, SD15_UNET, SD15_VAE  # noqa: E402
from lego.synthego import vocabulary  # noqa: E402

BATCH, SIZE, STEPS, WARMUP = 32, 64, 30, 5
SAMPLER = "DPMSolverMultistepScheduler"
TEXTS = ["pick up the red cup", "push the blue box", "open the green box", "cut the bread"]


class Pairs(Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.frames = torch.rand(n, 2, 3, SIZE, SIZE, generator=g) * 2 - 1

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> EgoSample:
        return EgoSample(
            sample_id=f"c{i}/a{i}",
            clip_id=f"c{i}",
            action_id=f"a{i}",
            image_0="x.png",
            image_1="y.png",
            input_frame=self.frames[i, 0],
            target_frame=self.frames[i, 1],
            action=TEXTS[i % 4],
            raw_action=TEXTS[i % 4],
            text=TEXTS[i % 4],
        )


def loader() -> DataLoader:
    return DataLoader(Pairs(BATCH * 4), batch_size=BATCH, collate_fn=EgoBatch.collate)


def write_sd15_backbone(root: Path) -> Path:
    """Random weights with Stable Diffusion 1.5's UNet, autoencoder and text-encoder shapes."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    write_diffusion_backbone(root, vocabulary(), resolution=SIZE)  # tokenizer + scheduler
    vocab = len(CLIPTokenizer.from_pretrained(root / "tokenizer"))
    unet = {**SD15_UNET, "sample_size": SIZE // 8}
    UNet2DConditionModel.from_config(unet).save_pretrained(root / "unet")
    AutoencoderKL.from_config({**SD15_VAE, "sample_size": SIZE}).save_pretrained(root / "vae")
    config = CLIPTextConfig(vocab_size=vocab, **SD15_TEXT_ENCODER)
    CLIPTextModel(config).save_pretrained(root / "text_encoder")
    return root


def lightning_seconds_per_step(root: Path, accelerator: str = "cpu", precision: str = "32-true",
                               prediction_type: str = "sample", ema_decay: float | None = 0.999,
                               **kwargs) -> float:
    module = InstructPix2PixModule(
        pretrained=str(root), prediction_type=prediction_type, ema_decay=ema_decay,
        sampler=SAMPLER, **kwargs
    )
    times = []

    class Clock(L.Callback):
        def on_train_batch_start(self, *args) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter())

    trainer = L.Trainer(
        accelerator=accelerator,
        precision=precision,
        max_steps=STEPS + WARMUP,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
        callbacks=[Clock()],
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=loader())
    del trainer, module
    gc.collect()  # the next run must not share memory with this one
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return (times[-1] - times[WARMUP]) / (len(times) - 1 - WARMUP)


def plain_seconds_per_step(root: Path) -> float:
    module = InstructPix2PixModule(
        pretrained=str(root), prediction_type="sample", ema_decay=None, sampler=SAMPLER
    )
    module.configure_model()
    unet, vae, text_encoder, tokenizer = (
        module.unet,
        module.vae,
        module.text_encoder,
        module.tokenizer,
    )
    scheduler = module.noise_scheduler
    unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=0.01)
    data = list(loader())
    times = []
    for step in range(STEPS + WARMUP):
        times.append(time.perf_counter())
        batch = data[step % len(data)]
        with torch.no_grad():
            target = vae.encode(batch.target_frames).latent_dist.sample()
            target = target * vae.config.scaling_factor
            image = vae.encode(batch.input_frames).latent_dist.mode()
            ids = tokenizer(
                batch.texts,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            text = text_encoder(ids)[0]
        noise = torch.randn_like(target)
        t = torch.randint(0, 1000, (BATCH,))
        noisy = scheduler.add_noise(target, noise, t)
        r = torch.rand(BATCH)
        image = image * ~((r >= 0.05) & (r < 0.15))[:, None, None, None]
        pred = unet(torch.cat([noisy, image], 1), t, encoder_hidden_states=text).sample
        loss = F.mse_loss(pred, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    times.append(time.perf_counter())
    return (times[-1] - times[WARMUP]) / STEPS


def sd15(accelerator: str, precision: str, batch: int = 16, size: int = 256,
         ema: bool = True) -> None:
    global BATCH, SIZE
    BATCH, SIZE = batch, size
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_sd15_backbone(Path(tmp))
        run = {"accelerator": accelerator, "precision": precision, "prediction_type": "epsilon",
               "ema_decay": 0.9999 if ema else None}
        plain = lightning_seconds_per_step(root, **run)
        text = lightning_seconds_per_step(root, text_cache_size=1000, **run)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        both = lightning_seconds_per_step(root, text_cache_size=1000, latent_cache_size=1000,
                                          **run)
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    write(
        f"diffusion_training_sd15_{precision}",
        {
            "setup": f"SD 1.5 shapes (random weights), batch {BATCH}, {SIZE}x{SIZE} px, "
                     f"{precision}, EMA {'on' if ema else 'off'}, epsilon prediction",
            "ms_per_sample_no_cache": round(plain / BATCH * 1000, 2),
            "ms_per_sample_text_cache": round(text / BATCH * 1000, 2),
            "ms_per_sample_text_and_latent_cache": round(both / BATCH * 1000, 2),
            "latent_cache_ratio": round(both / text, 3),
            "both_caches_ratio": round(both / plain, 3),
            "goal": "latent cache <= 0.55x",
            "peak_gpu_memory_gib_with_caches": round(peak, 2) if peak is not None else None,
        },
    )


def main() -> None:
    global STEPS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["synthego", "sd15"], default="synthego")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--batch", type=int, default=16, help="sd15 preset: batch size")
    parser.add_argument("--size", type=int, default=256, help="sd15 preset: frame side in px")
    parser.add_argument("--steps", type=int, default=STEPS, help="timed steps")
    parser.add_argument("--no-ema", action="store_true", help="sd15 preset: EMA off (less memory)")
    args = parser.parse_args()
    if args.preset == "sd15":
        STEPS = args.steps
        sd15(args.accelerator, args.precision, batch=args.batch, size=args.size,
             ema=not args.no_ema)
        return
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_diffusion_backbone(Path(tmp), vocabulary(), resolution=SIZE)
        plain = plain_seconds_per_step(root)
        ours = lightning_seconds_per_step(root)
        cached = lightning_seconds_per_step(root, text_cache_size=1000, latent_cache_size=1000)
    write(
        "diffusion_training",
        {
            "setup": f"batch {BATCH}, {SIZE}x{SIZE} px, (32, 64) UNet, pixel-unshuffle autoencoder",
            "lightning_steps_per_s": round(1 / ours, 3),
            "plain_loop_steps_per_s": round(1 / plain, 3),
            "ratio_lightning_over_plain": round(plain / ours, 3),
            "seconds_per_step_no_cache": round(ours, 4),
            "seconds_per_step_with_text_and_latent_cache": round(cached, 4),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        },
    )


if __name__ == "__main__":
    main()
