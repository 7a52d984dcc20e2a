"""VisualInstructionTuning: fit and describe through the CLI, export, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback, Trainer
from peft import PeftModel
from safetensors import safe_open
from transformers import AutoProcessor, LlavaForConditionalGeneration

from lego.batch import EgoBatch
from lego.callbacks import DescriptionWriter
from lego.cli import main
from lego.data import SynthEgoDataModule, clean_ego4d_narration, read_records
from lego.data.features import FeatureCache
from lego.data.io import DataFormatError
from lego.data.records import open_rgb
from lego.errors import ConfigError
from lego.models.instruct import VisualInstructionTuning
from lego.models.instruct.network import PromptTemplate, find_projector


def write_yaml(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def data_config(root: Path, **over) -> dict:
    args = {
        "root": str(root),
        "resolution": 32,
        "batch_size": 4,
        "num_workers": 0,
        "flip_prob": 0.0,
        "check_frames": "none",
    }
    args.update(over)
    return {"class_path": "SynthEgoDataModule", "init_args": args}


def test_fit_overfits_then_describe_generates_the_answers(tmp_path, tiny_vlm, synthego_root):
    """A tiny VLM learns 4 (image, action) -> description pairs and then generates them."""
    fit = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "default_root_dir": str(tmp_path),
            "max_steps": 160,
            "limit_val_batches": 0,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "logger": False,
        },
        "model": {
            "class_path": "VisualInstructionTuning",
            "init_args": {
                "model_name_or_path": str(tiny_vlm),
                "finetune": "full",
                "learning_rate": 3e-3,
                "export_dir": str(tmp_path / "export"),
            },
        },
        "data": data_config(synthego_root, max_samples=4, shuffle=False),
    }
    main(["fit", "--config", str(write_yaml(tmp_path / "fit.yaml", fit))])
    model_dir = tmp_path / "export" / "model"
    assert (model_dir / "model.safetensors").is_file()
    assert (model_dir / "processor_config.json").is_file()

    describe = {
        "trainer": {
            "accelerator": "cpu",
            "default_root_dir": str(tmp_path),
            "logger": False,
            "enable_progress_bar": False,
            "callbacks": [
                {
                    "class_path": "DescriptionWriter",
                    "init_args": {"cache_root": str(tmp_path / "features"), "shard_size": 3},
                },
                {
                    "class_path": "DescriptionMetricsCallback",
                    "init_args": {
                        "metadata": str(synthego_root / "synthego_metadata.json"),
                        "output_dir": str(tmp_path / "features"),
                    },
                },
            ],
        },
        "model": {
            "class_path": "VisualInstructionTuning",
            "init_args": {
                "model_name_or_path": str(model_dir),
                "finetune": "full",
                "temperature": 0.0,
                "max_new_tokens": 40,
            },
        },
        "data": data_config(synthego_root, max_samples=4, predict_split="train"),
    }
    main(["predict", "--config", str(write_yaml(tmp_path / "describe.yaml", describe))])
    curated = json.loads(
        (synthego_root / "curation_from_gpt" / "synthego_for_tuning_forecasting.json").read_text()
    )
    answers = {e["image"]: e["conversations"][1]["value"] for e in curated}
    records = read_records(tmp_path / "features" / "records" / "synthego_train.json")
    described = [r for r in records if "llava_forecast_finetune" in r.fields]
    assert len(described) == 4
    for rec in described:
        assert rec.fields["llava_forecast_finetune"] == answers[rec.fields["image_0"]]
    # the learned answers are the true descriptions: every field right
    report = json.loads((tmp_path / "features" / "description_metrics_train.json").read_text())
    assert report["count"] == 4
    assert report["all"] == pytest.approx(100.0) and report["colour"] == pytest.approx(100.0)
    cache = FeatureCache(tmp_path / "features" / "train", embed_dim=64, image_tokens=16)
    assert len(cache) == 4
    assert cache.manifest["image_storage"] == "vision"

    # embeddings equal a direct transformers call on the exported model
    rec = described[0]
    model = LlavaForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    template = PromptTemplate()
    action = clean_ego4d_narration(rec.fields["action"])
    prompt = template.render(template.question(action, "s"), processor)
    frame = open_rgb(synthego_root / "EgoGen/synthego/train" / rec.fields["image_0"], "test")
    enc = processor(text=[prompt], images=[frame], return_tensors="pt")
    with torch.no_grad():
        image = torch.stack(
            model.get_image_features(pixel_values=enc["pixel_values"]).pooler_output
        )
        out = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=40,
            output_hidden_states=True,
            return_dict_in_generate=True,
        )
    steps = torch.stack([h[-1][:, -1] for h in out.hidden_states], dim=1)[0]
    got = cache.read(rec.sample_id, rec.fields["image_0"])
    assert got["vlm_image"].shape == (16, 64) and got["vlm_text"].shape == (77, 64)
    torch.testing.assert_close(got["vlm_image"], image[0], atol=2e-2, rtol=1e-2)
    n = int(got["vlm_text_mask"].sum())
    assert n == steps.shape[0]
    torch.testing.assert_close(got["vlm_text"][:n], steps.half().float(), atol=1e-2, rtol=1e-2)


def test_lora_fit_exports_adapter_for_stock_peft(tmp_path, tiny_vlm, synthego_root):
    fit = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "max_steps": 3,
            "val_check_interval": 3,
            "limit_val_batches": 1,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(tmp_path / "logs"), "name": "instruct"},
            },
            "callbacks": [
                {
                    "class_path": "DescriptionMetricsCallback",
                    "init_args": {"metadata": str(synthego_root / "synthego_metadata.json")},
                }
            ],
        },
        "model": {
            "class_path": "VisualInstructionTuning",
            "init_args": {
                "model_name_or_path": str(tiny_vlm),
                "lora_r": 4,
                "lora_alpha": 8,
                "gradient_checkpointing": True,
                "question_source": "curated",
                "learning_rate": 1e-2,
                "warmup_ratio": 0.0,
                "lr_schedule": "cosine",
                "val_generate_samples": 2,
                "val_describe_batches": 1,
                "val_max_new_tokens": 5,
                "export_dir": str(tmp_path / "export"),
                "export_merged": True,
            },
        },
        "data": data_config(synthego_root, description_key="oracle_description"),
    }
    main(["fit", "--config", str(write_yaml(tmp_path / "fit.yaml", fit))])
    adapter, merged = tmp_path / "export" / "adapter", tmp_path / "export" / "merged"
    assert (adapter / "adapter_config.json").is_file()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert "multi_modal_projector" in config["modules_to_save"]

    base = LlavaForConditionalGeneration.from_pretrained(tiny_vlm).eval()
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    template = PromptTemplate()
    prompt = template.render(template.question("pick up the cup", "s"), processor)
    frame = open_rgb(next((synthego_root / "EgoGen/synthego/val").rglob("*.png")), "test")
    enc = processor(text=[prompt], images=[frame], return_tensors="pt")
    with torch.no_grad():
        base_logits = base(**enc).logits
        tuned = PeftModel.from_pretrained(base, adapter).eval()
        peft_logits = tuned(**enc).logits
        merged_logits = LlavaForConditionalGeneration.from_pretrained(merged).eval()(**enc).logits
    assert not torch.allclose(base_logits, peft_logits, atol=1e-4)
    torch.testing.assert_close(peft_logits, merged_logits, atol=1e-4, rtol=1e-4)

    # validation logged the loss and generated descriptions as TensorBoard text
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tmp_path / "logs").rglob("events.out.*")).parent))
    events.Reload()
    assert "val/loss" in events.Tags()["scalars"]
    assert "val/descriptions/text_summary" in events.Tags()["tensors"]
    # every sample of the first val batch was described and scored against the scene truth
    assert {f"val/description_{f}" for f in ("hand", "colour", "place", "all")} <= set(
        events.Tags()["scalars"]
    )


class KillAfter(Callback):
    """Simulates a job killed after ``n`` predict batches."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx + 1 >= self.n:
            raise RuntimeError("killed")


def describe(tiny_vlm, root, cache_root, callbacks=(), **model_args):
    model = VisualInstructionTuning(str(tiny_vlm), max_new_tokens=4, **model_args)
    dm = SynthEgoDataModule(root=root, resolution=32, batch_size=2, num_workers=0,
                            input_images=True, skip_described=cache_root)
    writer = DescriptionWriter(cache_root, shard_size=2)
    trainer = Trainer(
        accelerator="cpu",
        default_root_dir=cache_root,
        logger=False,
        enable_progress_bar=False,
        callbacks=[writer, *callbacks],
    )
    trainer.predict(model, datamodule=dm, return_predictions=False)
    return writer


def shard_ids(path):
    with safe_open(str(path), framework="pt") as f:
        return [s["id"] for s in json.loads(f.metadata()["samples"])]


def test_killed_describe_resumes_without_redoing_samples(tmp_path, tiny_vlm, synthego_root):
    cache_root = tmp_path / "features"
    with pytest.raises(RuntimeError, match="killed"):
        describe(tiny_vlm, synthego_root, cache_root, callbacks=[KillAfter(2)])
    shards = cache_root / "val" / "shards"
    first = {p.name: (p.stat().st_mtime_ns, shard_ids(p)) for p in shards.glob("*.safetensors")}
    done = [sid for _, ids in first.values() for sid in ids]
    assert len(done) == 4 and not (cache_root / "val" / "index.json").exists()

    writer = describe(tiny_vlm, synthego_root, cache_root)
    assert writer.samples == 4  # only the 4 samples the killed run had not finished
    after = {p.name: p for p in shards.glob("*.safetensors")}
    for name, (mtime, _) in first.items():
        assert after[name].stat().st_mtime_ns == mtime
    all_ids = [sid for p in after.values() for sid in shard_ids(p)]
    val_ids = [r.sample_id for r in read_records(synthego_root / "synthego_val.json")]
    assert sorted(all_ids) == sorted(val_ids)  # every sample exactly once
    index = json.loads((cache_root / "val" / "index.json").read_text())
    assert sorted(index["samples"]) == sorted(val_ids)
    records = read_records(cache_root / "records" / "synthego_val.json")
    assert all(isinstance(r.fields.get("llava_forecast_finetune"), str) for r in records)

    # a run with other generation settings may not add to this cache
    with pytest.raises(DataFormatError, match="different model or settings: 'generation'"):
        describe(tiny_vlm, synthego_root, cache_root, temperature=0.7)


def test_bad_input_errors_name_the_sample(tmp_path, tiny_vlm, synthego_root):
    curated = synthego_root / "curation_from_gpt" / "synthego_for_tuning_forecasting.json"
    entries = json.loads(curated.read_text())
    records = read_records(synthego_root / "synthego_train.json")
    first = records[0]
    kept = [e for e in entries if e["image"] != first.fields["image_0"]]
    (tmp_path / "curated.json").write_text(json.dumps(kept))
    dm = SynthEgoDataModule(
        root=synthego_root,
        resolution=32,
        batch_size=2,
        num_workers=0,
        curated_file=tmp_path / "curated.json",
        shuffle=False,
        input_images=True,
    )
    dm.setup("fit")
    batch = EgoBatch.collate([dm.datasets["train"][0], dm.datasets["train"][1]])
    model = VisualInstructionTuning(str(tiny_vlm), max_new_tokens=2)
    model.configure_model()
    with pytest.raises(DataFormatError, match=f"sample '{first.sample_id}'.*no curated answer"):
        model.training_step(batch, 0)

    batch.curated = ["An answer.", "An answer."]
    batch.actions = ["pick up the cup", "   "]
    with pytest.raises(ValueError, match=f"sample '{batch.sample_ids[1]}'.*empty action"):
        model.training_step(batch, 0)

    batch.actions = ["pick up the cup", "open the box"]
    assert batch.input_images[0].size == (32, 32)  # the frame as stored, decoded by the loader
    batch.input_images = None
    with pytest.raises(ConfigError, match="set the DataModule's input_images: true"):
        model.predict_step(batch, 0)


def test_vlm_yaml_configs_parse(capsys):
    configs = sorted(Path(__file__).parents[3].glob("configs/*/instruct.yaml"))
    configs += sorted(Path(__file__).parents[3].glob("configs/*/describe.yaml"))
    assert len(configs) == 6
    for config in configs:
        command = "fit" if config.name == "instruct.yaml" else "predict"
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--config", str(config), "--print_config"])
        assert exit_info.value.code in (0, None)
        printed = capsys.readouterr().out
        assert "VisualInstructionTuning" in printed, config
        if command == "predict":
            assert "DescriptionWriter" in printed, config


def test_projector_learning_rate_is_a_group_of_its_own(tiny_vlm):
    """LLaVA's LoRA recipe: adapters at 2e-4, the projector at 2e-5."""
    model = VisualInstructionTuning(str(tiny_vlm), finetune="lora", lora_r=4,
                                    learning_rate=2e-4, projector_learning_rate=2e-5)
    model.configure_model()
    groups = model.parameter_groups()
    projector = [p for p in find_projector(model.model).parameters() if p.requires_grad]
    assert len(groups) == 2 and groups[1]["lr"] == 2e-5 and "lr" not in groups[0]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in projector} and projector
    lora = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    assert lora and {id(p) for p in lora} <= {id(p) for p in groups[0]["params"]}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for g in groups for p in g["params"]) == trainable

    same = VisualInstructionTuning(str(tiny_vlm), finetune="lora", lora_r=4)
    same.configure_model()
    assert len(same.parameter_groups()) == 1
