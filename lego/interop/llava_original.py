"""An original-format LLaVA checkpoint (haotian-liu/LLaVA) as a transformers LLaVA folder.

The paper's VLM (``llava-llama-2-13b-chat``) is saved by the original LLaVA code: a
``LlavaLlamaForCausalLM`` folder whose ``config.json`` holds LLaMA's fields plus ``mm_*`` fields
(``mm_vision_tower``, ``mm_vision_select_layer``, ``mm_vision_select_feature``,
``mm_projector_type``), whose weights are the language model's (``model.*``, ``lm_head.*``) and
the projector's (``model.mm_projector.*``), and whose vision tower is CLIP, loaded from
``mm_vision_tower`` (frozen, not saved). :func:`import_llava` writes a
:class:`~transformers.LlavaForConditionalGeneration` folder with its processor that computes the
same logits:

* a ``linear`` projector becomes ``linear_1`` with an identity activation and an identity
  ``linear_2`` (the form :func:`lego.models.instruct.network.fold_projector` folds back);
  ``mlp2x_gelu`` (LLaVA-1.5) maps onto ``linear_1``, GELU, ``linear_2`` directly;
* the original code splices the image features in place of a ``-200`` placeholder; transformers
  uses an ``<image>`` token, added to the tokenizer (with ``<pad>`` when it has none), whose
  embedding and output rows are the mean of the existing ones: the logits of the original
  vocabulary are unchanged;
* ``mm_vision_select_layer`` and ``patch`` / ``cls_patch`` become ``vision_feature_layer`` and
  ``default`` / ``full``.

Every key is mapped strictly (an original key that maps nowhere, or a parameter left unset, is
an error naming them); weights are read with ``torch.load(weights_only=True)`` or safetensors,
never by unpickling code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor
from transformers import (
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPVisionModel,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from lego.metrics.convert import CheckpointConversionError, load_strict, rename_keys

#: The original code's projector types this import supports.
PROJECTORS = {"linear": "linear", "mlp2x_gelu": "gelu"}
#: The original ``mm_vision_select_feature`` values and transformers' strategies.
SELECT = {"patch": "default", "cls_patch": "full"}
#: Original config keys that are LLaVA's, not LLaMA's.
_LLAVA_KEYS = ("mm_", "image_aspect_ratio", "tune_mm", "freeze_mm", "use_mm", "mm_use",
               "unfreeze_mm", "architectures", "model_type", "_name_or_path",
               "transformers_version")


def read_weights(folder: Path) -> dict[str, Tensor]:
    """Every tensor of an original checkpoint folder, in its stored dtype.

    Reads ``*.safetensors`` or ``pytorch_model*.bin`` (sharded or not), without unpickling code.

    Raises:
        CheckpointConversionError: If the folder holds no weights or a file cannot be read.
    """
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise CheckpointConversionError(
            f"{folder}: no *.safetensors or pytorch_model*.bin files (an original LLaVA folder?)"
        )
    state: dict[str, Tensor] = {}
    for path in files:
        try:
            part = (load_file(str(path)) if path.suffix == ".safetensors"
                    else torch.load(path, map_location="cpu", weights_only=True))
        except Exception as err:  # noqa: BLE001 - any reader failure: name the file
            raise CheckpointConversionError(
                f"{path}: not a readable weights file ({type(err).__name__}: {err}); only "
                "safetensors and plain state dicts are read (no code is unpickled)"
            ) from err
        if not isinstance(part, dict) or not all(isinstance(v, Tensor) for v in part.values()):
            raise CheckpointConversionError(f"{path}: not a state dict of tensors")
        state.update(part)
    return state


def _config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointConversionError(f"{path}: cannot read the config ({err})") from err
    projector = config.get("mm_projector_type", "linear")
    if projector not in PROJECTORS:
        raise CheckpointConversionError(
            f"{path}: mm_projector_type {projector!r} is not supported (supported: "
            f"{sorted(PROJECTORS)})"
        )
    select = config.get("mm_vision_select_feature", "patch")
    if select not in SELECT:
        raise CheckpointConversionError(
            f"{path}: mm_vision_select_feature {select!r} is not one of {sorted(SELECT)}"
        )
    return config


def _padded(weight: Tensor, rows: int) -> Tensor:
    """``weight`` with ``rows`` more rows, each the mean of the existing ones."""
    if rows == 0:
        return weight
    mean = weight.float().mean(0, keepdim=True).to(weight.dtype)
    return torch.cat([weight, mean.expand(rows, -1)], dim=0)


def import_llava(
    checkpoint: Path | str,
    out_dir: Path | str,
    vision_tower: Path | str | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write an original-format LLaVA folder as a transformers LLaVA folder with its processor.

    Args:
        checkpoint: The original folder (``config.json``, weights, tokenizer files).
        out_dir: The folder to write (loads with ``LlavaForConditionalGeneration`` and
            ``AutoProcessor``; ``model_name_or_path`` of the instruct and describe configs).
        vision_tower: The CLIP vision tower (a local folder or hub id); default the config's
            ``mm_vision_tower`` (``openai/clip-vit-large-patch14`` for the paper's model).
        dtype: The saved dtype; default the checkpoint's.

    Returns:
        ``out_dir``.

    Raises:
        CheckpointConversionError: If the folder is not an original LLaVA checkpoint this import
            supports, or a key cannot be mapped.
    """
    folder, out_dir = Path(checkpoint), Path(out_dir)
    config = _config(folder)
    state = read_weights(folder)
    tower_source = str(vision_tower or config.get("mm_vision_tower") or "")
    if not tower_source:
        raise CheckpointConversionError(
            f"{folder / 'config.json'}: no mm_vision_tower; pass the CLIP vision tower"
        )
    tower = CLIPVisionModel.from_pretrained(tower_source)
    image_processor = CLIPImageProcessor.from_pretrained(tower_source)

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    original_vocab = state["lm_head.weight"].shape[0] if "lm_head.weight" in state else None
    if original_vocab is None:
        raise CheckpointConversionError(f"{folder}: missing key 'lm_head.weight'")
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
    vocab = max(len(tokenizer), original_vocab)

    text_fields = {k: v for k, v in config.items() if not k.startswith(_LLAVA_KEYS)}
    text_config = LlamaConfig(**{**text_fields, "vocab_size": vocab,
                                 "pad_token_id": tokenizer.pad_token_id})
    vision = tower.config
    llava_config = LlavaConfig(
        vision_config=vision,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(vision.image_size // vision.patch_size) ** 2,
        projector_hidden_act=PROJECTORS[config.get("mm_projector_type", "linear")],
        vision_feature_layer=int(config.get("mm_vision_select_layer", -2)),
        vision_feature_select_strategy=SELECT[config.get("mm_vision_select_feature", "patch")],
    )

    rules = [
        (r"model\.mm_projector\.(weight|bias)", r"model.multi_modal_projector.linear_1.\1"),
        (r"model\.mm_projector\.0\.(weight|bias)", r"model.multi_modal_projector.linear_1.\1"),
        (r"model\.mm_projector\.2\.(weight|bias)", r"model.multi_modal_projector.linear_2.\1"),
        (r"model\.(embed_tokens|layers|norm)\.(.+)", r"model.language_model.\1.\2"),
        (r"lm_head\.weight", "lm_head.weight"),
    ]
    # a saved vision tower (trained with it unfrozen) wins over the external one
    saved_tower = {k: v for k, v in state.items() if k.startswith("model.vision_tower.")}
    ignore = tuple(k for k in state if "rotary_emb.inv_freq" in k)
    mapping, unmapped = rename_keys(
        {k: v for k, v in state.items() if k not in saved_tower}, "", rules, ignore=ignore)
    tower_state = ({k.replace("model.vision_tower.vision_tower.vision_model.",
                              "model.vision_tower."): v for k, v in saved_tower.items()}
                   if saved_tower else
                   {"model.vision_tower." + k.removeprefix("vision_model."): v
                    for k, v in tower.state_dict().items()})
    for key, tensor in tower_state.items():
        mapping[key] = (key, tensor)
    extra = vocab - original_vocab
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        if key in mapping:
            name, weight = mapping[key]
            mapping[key] = (name, _padded(weight, extra))
    if config.get("mm_projector_type", "linear") == "linear":
        width = text_config.hidden_size
        mapping["model.multi_modal_projector.linear_2.weight"] = ("(identity)", torch.eye(width))
        mapping["model.multi_modal_projector.linear_2.bias"] = ("(identity)", torch.zeros(width))

    target_dtype = dtype or next(v.dtype for v in state.values() if v.is_floating_point())
    model = LlavaForConditionalGeneration(llava_config).to(target_dtype)
    mapping = {k: (name, t.to(target_dtype) if t.is_floating_point() else t)
               for k, (name, t) in mapping.items()}
    load_strict(model, mapping, unmapped, folder)
    for field in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.generation_config, field, getattr(tokenizer, field))
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision.patch_size,
        vision_feature_select_strategy=llava_config.vision_feature_select_strategy,
        num_additional_image_tokens=1,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
