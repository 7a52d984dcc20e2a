"""DescriptionWriter: feature cache + enriched records, resume, DDP sharding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import LightningModule, Trainer
from safetensors import safe_open

from lego.callbacks import DescriptionWriter
from lego.cli import main
from lego.data import SynthEgoDataModule, clean_ego4d_narration, read_records
from lego.data.features import FORMAT, DescribedSamples, FeatureCache
from lego.models.instruct.bootstrap import write_synthego_vlm

D = 8


class FakeDescriber(LightningModule):
    """Deterministic stand-in for the VLM: the description is the action, embeddings are ids."""

    def __init__(self, output: str = "described") -> None:
        super().__init__()
        self.output = output
        self.calls: list[str] = []

    def describe_plan(self):
        return {
            "manifest": {
                "format": FORMAT,
                "model": {"name_or_path": "fake"},
                "template": {},
                "generation": {},
                "image_storage": "projected",
                "dims": {"image_tokens": 2, "vision_dim": D, "embed_dim": D, "text_length": 77},
                "dtype": "float16",
            },
            "projector": None,
        }

    def predict_step(self, batch, batch_idx):
        keep = list(range(len(batch)))
        self.calls += [batch.sample_ids[i] for i in keep]
        if self.output != "described":
            return {"not": "described"}
        b = len(keep)
        mask = torch.zeros(b, 77, dtype=torch.bool)
        mask[:, :2] = True
        return DescribedSamples(
            sample_ids=[batch.sample_ids[i] for i in keep],
            image_0=[batch.image_0[i] for i in keep],
            descriptions=[f"how to {batch.actions[i]}" for i in keep],
            num_tokens=[2] * b,
            image=torch.full((b, 2, D), float(batch_idx)),
            text=torch.ones(b, 77, D) * mask[..., None],
            text_mask=mask,
            image_storage="projected",
        )


def run(module, root, cache_root, **writer_args):
    dm = SynthEgoDataModule(root=root, resolution=32, batch_size=3, num_workers=0,
                            skip_described=cache_root)
    writer = DescriptionWriter(cache_root, **writer_args)
    trainer = Trainer(
        accelerator="cpu",
        default_root_dir=cache_root,
        logger=False,
        enable_progress_bar=False,
        callbacks=[writer],
    )
    trainer.predict(module, datamodule=dm, return_predictions=False)
    return writer


def test_writes_cache_and_enriched_records(synthego_root, tmp_path):
    module = FakeDescriber()
    writer = run(module, synthego_root, tmp_path / "features", description_key="my_key")
    records = read_records(tmp_path / "features" / "records" / "synthego_val.json")
    assert len(records) == 8 == writer.samples
    for rec in records:
        assert rec.fields["my_key"] == f"how to {clean_ego4d_narration(rec.fields['action'])}"
        assert rec.fields["image_0"]  # the rest of the record is kept
    cache = FeatureCache(tmp_path / "features" / "val", embed_dim=D)
    assert len(cache) == 8
    assert cache.read(records[0].sample_id)["vlm_text_mask"].sum() == 2

    again = FakeDescriber()
    writer = run(again, synthego_root, tmp_path / "features", description_key="my_key")
    assert again.calls == [] and writer.samples == 0  # everything was already described
    assert len(read_records(tmp_path / "features" / "records" / "synthego_val.json")) == 8
    with pytest.raises(FileExistsError, match="resume is off"):
        run(FakeDescriber(), synthego_root, tmp_path / "features", resume=False)


def test_refuses_other_outputs_and_modules(synthego_root, tmp_path):
    with pytest.raises(TypeError, match="expects DescribedSamples"):
        run(FakeDescriber(output="dict"), synthego_root, tmp_path / "a")

    class NotAVlm(LightningModule):
        def predict_step(self, batch, batch_idx):
            return None

    with pytest.raises(TypeError, match="no describe_plan"):
        run(NotAVlm(), synthego_root, tmp_path / "b")


def shard_ids(path: Path) -> list[str]:
    with safe_open(str(path), framework="pt") as f:
        return [s["id"] for s in json.loads(f.metadata()["samples"])]


def test_ddp_describe_writes_each_sample_once(synthego_root, tmp_path):
    """Two gloo processes: each rank writes its shards, the index merges them, and the
    descriptions equal a single-process run (sampling is seeded per sample)."""
    vlm = write_synthego_vlm(tmp_path / "vlm", image_size=32, vision_hidden=32, text_hidden=64)

    def config(cache_root: Path) -> Path:
        cfg = {
            "trainer": {
                "accelerator": "cpu",
                "default_root_dir": str(cache_root),
                "logger": False,
                "enable_progress_bar": False,
                "callbacks": [
                    {
                        "class_path": "DescriptionWriter",
                        "init_args": {"cache_root": str(cache_root), "shard_size": 2},
                    }
                ],
            },
            "model": {
                "class_path": "VisualInstructionTuning",
                "init_args": {"model_name_or_path": str(vlm), "max_new_tokens": 6},
            },
            "data": {
                "class_path": "SynthEgoDataModule",
                "init_args": {
                    "root": str(synthego_root),
                    "resolution": 32,
                    "batch_size": 3,
                    "num_workers": 0,
                },
            },
        }
        path = cache_root.with_suffix(".yaml")
        path.write_text(yaml.safe_dump(cfg))
        return path

    ddp_cfg = config(tmp_path / "ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lego",
            "predict",
            "--config",
            str(ddp_cfg),
            "--trainer.strategy=ddp",
            "--trainer.devices=2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = sorted((tmp_path / "ddp" / "val" / "shards").glob("*.safetensors"))
    ranks = {p.name[:7] for p in shards}
    assert ranks == {"rank000", "rank001"}
    ids = [sid for p in shards for sid in shard_ids(p)]
    val_ids = [r.sample_id for r in read_records(synthego_root / "synthego_val.json")]
    assert sorted(ids) == sorted(val_ids)  # each sample exactly once
    index = json.loads((tmp_path / "ddp" / "val" / "index.json").read_text())
    assert sorted(index["samples"]) == sorted(val_ids)

    main(["predict", "--config", str(config(tmp_path / "single"))])
    ddp = json.loads((tmp_path / "ddp" / "val" / "descriptions.json").read_text())
    single = json.loads((tmp_path / "single" / "val" / "descriptions.json").read_text())
    assert ddp == single
    a, b = FeatureCache(tmp_path / "ddp" / "val"), FeatureCache(tmp_path / "single" / "val")
    for sid in val_ids[:3]:
        torch.testing.assert_close(a.read(sid)["vlm_text"], b.read(sid)["vlm_text"])
