"""Exact resume: a ``fit`` killed with SIGKILL after a checkpoint and resumed from it with
``--ckpt_path`` ends with the parameters, EMA and optimizer state of the uninterrupted run.

Each case is a chain of real ``python -m lego fit`` processes on the same config (4 batches an
epoch, a checkpoint every 3 steps and at each epoch end, validation at each epoch end):

1. the uninterrupted run, to step 8;
2. a run killed right after its mid-epoch checkpoint ``step=3.ckpt`` (batch 3 of 4);
3. the resumption of (2), killed right after its epoch-end checkpoint ``epoch=0-step=4.ckpt``,
   which must equal the uninterrupted run's;
4. the resumption of (3), to step 8, whose ``last.ckpt`` must equal the uninterrupted run's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from lego.data.features import FORMAT, DescribedSamples, FeatureCacheWriter, finalize_cache
from lego.data.records import read_records
from lego.models.instruct.bootstrap import write_synthego_vlm
from lego.models.seeding import step_randomness
from tests.models.instruct.conftest import TINY

MID_EPOCH = "step=3.ckpt"
EPOCH_END = "epoch=0-step=4.ckpt"
VLM_DIM = 16


def checkpointing() -> list[dict]:
    """The shipped configs' two checkpoints: epoch ends (and last), and every N steps."""
    return [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"save_last": True, "save_on_train_epoch_end": True, "save_top_k": -1},
        },
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"filename": "{step}", "every_n_train_steps": 3, "save_top_k": -1},
        },
    ]


def trainer_config(**over) -> dict:
    config = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": 8,
        "check_val_every_n_epoch": 1,
        "limit_val_batches": 1,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
        "enable_progress_bar": False,
        "logger": False,
        "callbacks": checkpointing(),
    }
    config.update(over)
    return config


def data_config(root: Path, **over) -> dict:
    """8 train samples in batches of 2: 4 batches an epoch, reshuffled every epoch."""
    args = {
        "root": str(root),
        "resolution": 32,
        "batch_size": 2,
        "num_workers": 0,
        "max_samples": 8,
        "check_frames": "none",
        "flip_prob": 0.5,  # flips drawn from (seed, epoch, sample)
        "data_seed": 3,
    }
    args.update(over)
    return {"class_path": "SynthEgoDataModule", "init_args": args}


def write_features(root: Path, out: Path) -> Path:
    """A random VLM feature cache for every train and val sample (as the describe stage's)."""
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        records = read_records(root / f"synthego_{split}.json")
        writer = FeatureCacheWriter(out / split)
        writer.prepare(
            {
                "format": FORMAT,
                "version": 1,
                "model": {"name_or_path": "random", "adapter": None, "projector_sha256": "x"},
                "template": {},
                "generation": {},
                "image_storage": "projected",
                "dims": {"image_tokens": 4, "vision_dim": 8, "embed_dim": VLM_DIM,
                         "text_length": 77},
                "dtype": "float16",
            },
            None,
            write=True,
        )
        n = len(records)
        tokens = [int(t) for t in torch.randint(3, 20, (n,), generator=g)]
        text = torch.randn(n, 77, VLM_DIM, generator=g)
        mask = torch.arange(77)[None] < torch.tensor(tokens)[:, None]
        writer.add(
            DescribedSamples(
                sample_ids=[r.sample_id for r in records],
                image_0=[r.fields["image_0"] for r in records],
                descriptions=[f"description {i}" for i in range(n)],
                num_tokens=tokens,
                image=torch.randn(n, 4, VLM_DIM, generator=g),
                text=text * mask[..., None],
                text_mask=mask,
                image_storage="projected",
            )
        )
        writer.flush()
        finalize_cache(out / split)
    return out


class Run:
    """A ``python -m lego fit`` process (and its DDP children: a process group of its own)."""

    def __init__(self, config: Path, run_dir: Path, *args: str, kill_after: str | None = None):
        """Start it; with ``kill_after``, :meth:`wait` SIGKILLs it once that checkpoint exists
        (Lightning writes a checkpoint to a temporary file, then renames it)."""
        command = [sys.executable, "-m", "lego", "fit", "--config", str(config),
                   f"--trainer.default_root_dir={run_dir}", *args]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        run_dir.mkdir(parents=True)
        self.run_dir, self.kill_after = run_dir, kill_after
        with open(run_dir / "output.txt", "w") as output:
            self.process = subprocess.Popen(command, cwd=run_dir, env=env, stdout=output,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def checkpoint(self, name: str) -> Path:
        return self.run_dir / "checkpoints" / name

    def wait(self, timeout: float = 300) -> Run:
        deadline = time.monotonic() + timeout
        if self.kill_after is not None:
            target = self.checkpoint(self.kill_after)
            while not target.exists() and self.process.poll() is None:
                assert time.monotonic() < deadline, f"timed out waiting for {target}"
                time.sleep(0.005)
            os.killpg(self.process.pid, signal.SIGKILL)  # kill -9, the whole job
        code = self.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        log = (self.run_dir / "output.txt").read_text()
        expected = -signal.SIGKILL if self.kill_after is not None else 0
        assert code == expected, f"exit {code}, expected {expected}:\n{log[-4000:]}"
        return self


def assert_same_state(path: Path, reference: Path) -> None:
    """Every parameter, the EMA and the optimizer state are bit-equal."""
    got = torch.load(path, map_location="cpu", weights_only=False)
    want = torch.load(reference, map_location="cpu", weights_only=False)
    assert got["global_step"] == want["global_step"]
    assert got["state_dict"].keys() == want["state_dict"].keys()
    differ = [k for k in want["state_dict"]
              if not torch.equal(got["state_dict"][k], want["state_dict"][k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
    if "ema" in want:
        assert got["ema"]["optimization_step"] == want["ema"]["optimization_step"]
        pairs = zip(got["ema"]["shadow_params"], want["ema"]["shadow_params"], strict=True)
        assert all(torch.equal(a, b) for a, b in pairs), "EMA differs"
    (got_opt,), (want_opt,) = got["optimizer_states"], want["optimizer_states"]
    for index, state in want_opt["state"].items():
        for key, value in state.items():
            assert torch.equal(got_opt["state"][index][key], value), f"optimizer {key} differs"


def check_exact_resume(config: Path, tmp_path: Path) -> None:
    uninterrupted = Run(config, tmp_path / "uninterrupted")
    killed = Run(config, tmp_path / "killed", kill_after=MID_EPOCH)
    killed.wait()  # watches for its checkpoint while the uninterrupted run goes on
    uninterrupted.wait()
    assert not killed.checkpoint("last.ckpt").exists()  # killed before the epoch's end

    mid_epoch = killed.checkpoint(MID_EPOCH)
    resumed = Run(config, tmp_path / "resumed", f"--ckpt_path={mid_epoch}",
                  kill_after=EPOCH_END).wait()
    assert_same_state(resumed.checkpoint(EPOCH_END), uninterrupted.checkpoint(EPOCH_END))

    epoch_end = resumed.checkpoint(EPOCH_END)
    again = Run(config, tmp_path / "resumed_again", f"--ckpt_path={epoch_end}").wait()
    assert_same_state(again.checkpoint("last.ckpt"), uninterrupted.checkpoint("last.ckpt"))


def lego_config(backbone: Path, root: Path, features: Path, path: Path,
                trainer: dict | None = None, data: dict | None = None) -> Path:
    """LEGO with every random draw of training on: VLM conditioner dropout, logit-normal
    timesteps, guidance dropout, latent sampling, flips; prompt and latent caches; EMA."""
    config = {
        "seed_everything": 23,
        "trainer": trainer_config(**(trainer or {})),
        "model": {
            "class_path": "LegoDiffusionModule",
            "init_args": {
                "pretrained": str(backbone),
                "vlm_dim": VLM_DIM,
                "vlm_num_heads": 2,
                "vlm_dim_feedforward": 32,
                "vlm_dropout": 0.1,
                "prediction_type": "sample",
                "timestep_sampling": "logit_normal",
                "timestep_logit_mean": 2.0,
                "conditioning_dropout": 0.3,
                "learning_rate": 1e-3,
                "ema_decay": 0.9,
                "text_cache_size": 100,
                "latent_cache_size": 100,
                "sampler": "DPMSolverMultistepScheduler",
                "num_inference_steps": 2,
                "val_sample_batches": 1,
            },
        },
        "data": data_config(root, features=str(features), **(data or {})),
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_lego_diffusion_resumes_exactly(synthego_backbone, synthego_root, tmp_path):
    features = write_features(synthego_root, tmp_path / "features")
    config = lego_config(synthego_backbone, synthego_root, features, tmp_path / "lego.yaml")
    check_exact_resume(config, tmp_path)


@pytest.mark.slow
def test_lego_diffusion_resumes_exactly_under_ddp(synthego_backbone, synthego_root, tmp_path):
    """Two CPU processes (gloo): the killed and resumed DDP run ends as the uninterrupted one."""
    features = write_features(synthego_root, tmp_path / "features")
    config = lego_config(synthego_backbone, synthego_root, features, tmp_path / "lego.yaml",
                         trainer={"strategy": "ddp", "devices": 2},
                         data={"max_samples": 16})  # still 4 batches an epoch on each rank
    check_exact_resume(config, tmp_path)


def test_instruction_tuning_resumes_exactly(synthego_root, tmp_path):
    """LoRA with dropout, warmup and cosine schedule over the estimated steps."""
    vlm = write_synthego_vlm(tmp_path / "tiny-llava", **TINY)
    config = {
        "seed_everything": 42,
        # max_epochs: configure_optimizers then asks for estimated_stepping_batches before the
        # checkpoint is read, so Lightning never restores the loader's state (issue #20550)
        "trainer": trainer_config(max_steps=-1, max_epochs=2, gradient_clip_val=1.0),
        "model": {
            "class_path": "VisualInstructionTuning",
            "init_args": {
                "model_name_or_path": str(vlm),
                "finetune": "lora",
                "lora_r": 4,
                "lora_alpha": 8,
                "lora_dropout": 0.2,
                "learning_rate": 1e-3,
                "warmup_ratio": 0.25,
                "lr_schedule": "cosine",
                "val_generate_samples": 0,
            },
        },
        "data": data_config(synthego_root, description_key="oracle_description"),
    }
    path = tmp_path / "instruct.yaml"
    path.write_text(yaml.safe_dump(config))
    check_exact_resume(path, tmp_path)


def test_step_randomness_is_a_function_of_the_step_and_leaves_the_global_state():
    device = torch.device("cpu")
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    with step_randomness(1, 5, 2, 0, device) as generator:
        first = (torch.rand(3, generator=generator), torch.rand(3))
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.rand(10)  # whatever ran before does not matter
    with step_randomness(1, 5, 2, 0, device) as generator:
        again = (torch.rand(3, generator=generator), torch.rand(3))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    for other in [(2, 5, 2, 0), (1, 6, 2, 0), (1, 5, 3, 0), (1, 5, 2, 1)]:
        with step_randomness(*other, device) as generator:
            assert not torch.equal(torch.rand(3, generator=generator), first[0])
