"""Original metric checkpoints (Salesforce BLIP ``.pth``, OpenAI CLIP ``.pt``) to transformers.

The paper's metric weights are the original releases: BLIP captioners in the Salesforce BLIP
format (``{"model": state_dict}`` with ``visual_encoder.*`` and ``text_decoder.*`` keys) and
OpenAI's CLIP ViT-L/14 TorchScript archive (``visual.*`` keys). This module maps every key of
the towers a metric uses onto a transformers :class:`~transformers.BlipForConditionalGeneration`
or :class:`~transformers.CLIPVisionModelWithProjection`. Geometry (width, depth, patch and image
size, MLP width, vocabulary) is read from tensor shapes; heads are ``width // head_dim`` (64 in
every released ViT-B/L and BERT-base). Conversion is strict: an original key of a used tower
that maps nowhere, or a model parameter left unset, is an error naming the file and the keys.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from transformers import (
    BertTokenizerFast,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    PreTrainedTokenizerBase,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

from lego.errors import UserError

#: Original file names of the paper's metric weights (``bolinlai/LEGO-Metrics`` and OpenAI).
BLIP_BASE_FILE = "model_base_caption_capfilt_large.pth"
BLIP_LARGE_FILE = "model_large_caption.pth"
CLIP_FILE = "ViT-L-14.pt"
#: Head width of the released ViTs and BERT (OpenAI's ``width // 64``; BLIP's 12 / 16 heads).
HEAD_DIM = 64
#: Tokens the Salesforce BLIP code adds to the ``bert-base-uncased`` tokenizer.
BLIP_BOS = "[DEC]"
BLIP_ENC = "[ENC]"
#: Buffers saved by the original code that are not parameters of the transformers model.
_BLIP_BUFFERS = ("text_decoder.bert.embeddings.position_ids",)

Mapping = dict[str, tuple[str, Tensor]]
Rule = tuple[str, "str | Callable[[re.Match[str], Tensor], list[tuple[str, Tensor]]]"]


class CheckpointConversionError(UserError, ValueError):
    """An original checkpoint cannot be converted; the message names the file and the keys."""


def is_original_checkpoint(path: Path | str) -> bool:
    """Whether ``path`` is a checkpoint file (original form), not a transformers directory."""
    return Path(path).is_file()


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("constants.pkl")
                   for name in archive.namelist())


def load_original_state(path: Path | str) -> dict[str, Tensor]:
    """Read an original checkpoint's state dict on the CPU, floating tensors in float32.

    Accepts a TorchScript archive (OpenAI ``clip``; loaded with :func:`torch.jit.load`), a
    ``{"model": state_dict}`` or ``{"state_dict": state_dict}`` file (Salesforce BLIP) and a plain
    state dict (loaded with ``torch.load(weights_only=True)``: no code is unpickled).

    Args:
        path: The checkpoint file.

    Returns:
        Key -> tensor.

    Raises:
        FileNotFoundError: If the file does not exist.
        CheckpointConversionError: If it cannot be read or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        if _is_torchscript(path):
            with warnings.catch_warnings():  # OpenAI's archive can only be read by torch.jit
                warnings.simplefilter("ignore", FutureWarning)
                state: object = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure means "not a checkpoint"
        raise CheckpointConversionError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {err})"
        ) from err
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state:
        raise CheckpointConversionError(f"{path}: holds no state dict")
    bad = sorted(str(k) for k, v in state.items() if not isinstance(v, Tensor))
    if bad:
        raise CheckpointConversionError(f"{path}: entries that are not tensors: {bad[:5]}")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _count(state: dict[str, Tensor], pattern: str, path: Path) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    if found != set(range(len(found))):
        raise CheckpointConversionError(f"{path}: layer indices {sorted(found)} are not 0..N-1")
    return len(found)


def _need(state: dict[str, Tensor], key: str, path: Path) -> Tensor:
    if key not in state:
        raise CheckpointConversionError(f"{path}: missing key {key!r}")
    return state[key]


def _heads(width: int, head_dim: int, path: Path, what: str) -> int:
    if width % head_dim:
        raise CheckpointConversionError(
            f"{path}: {what} width {width} is not a multiple of the head width {head_dim}"
        )
    return width // head_dim


def _grid(positions: int, path: Path, what: str) -> int:
    grid = round((positions - 1) ** 0.5)
    if grid * grid != positions - 1:
        raise CheckpointConversionError(
            f"{path}: {what} has {positions} positions, not 1 + a square number of patches"
        )
    return grid


def load_strict(model: torch.nn.Module, mapping: Mapping, unmapped: list[str],
                 path: Path) -> None:
    """Load ``mapping`` (target -> (original key, tensor)) into ``model``, all or nothing."""
    expected = model.state_dict()
    unmapped = sorted(unmapped + [orig for target, (orig, _) in mapping.items()
                                  if target not in expected])
    missing = sorted(k for k in expected if k not in mapping)
    shapes = sorted(
        f"{orig} {tuple(t.shape)} -> {target} {tuple(expected[target].shape)}"
        for target, (orig, t) in mapping.items()
        if target in expected and t.shape != expected[target].shape
    )
    problems = []
    if unmapped:
        problems.append(f"original keys not mapped: {unmapped}")
    if missing:
        problems.append(f"model parameters left unset: {missing}")
    if shapes:
        problems.append(f"shape mismatches: {shapes}")
    if problems:
        raise CheckpointConversionError(f"{path}: cannot convert; " + "; ".join(problems))
    model.load_state_dict({target: t for target, (_, t) in mapping.items()}, strict=True)


def rename_keys(state: dict[str, Tensor], prefix: str,
            rules: list[Rule],
            ignore: tuple[str, ...] = ()) -> tuple[Mapping, list[str]]:
    """Map every ``prefix`` key by the first matching rule; return the mapping and the leftovers."""
    mapping: Mapping = {}
    unmapped: list[str] = []
    for key, tensor in state.items():
        if not key.startswith(prefix) or key in ignore:
            continue
        for pattern, target in rules:
            match = re.fullmatch(pattern, key)
            if match is None:
                continue
            if isinstance(target, str):
                mapping[match.expand(target)] = (key, tensor)
            else:
                for name, part in target(match, tensor):
                    mapping[name] = (key, part)
            break
        else:
            unmapped.append(key)
    return mapping, unmapped


# ----------------------------------------------------------------------------------------- BLIP


def blip_tokenizer(tokenizer_dir: Path | str) -> PreTrainedTokenizerBase:
    """The ``bert-base-uncased`` WordPiece tokenizer with BLIP's ``[DEC]`` (bos) and ``[ENC]``.

    ``distilbert-base-uncased`` ships the same uncased vocabulary as ``bert-base-uncased``, so
    either directory works; the vocabulary size is checked against the decoder on conversion.

    Args:
        tokenizer_dir: A ``bert-base-uncased`` or ``distilbert-base-uncased`` directory.

    Returns:
        The tokenizer, ``[DEC]`` and ``[ENC]`` appended as the original BLIP code does.
    """
    tokenizer = BertTokenizerFast.from_pretrained(str(tokenizer_dir))
    tokenizer.add_special_tokens({"bos_token": BLIP_BOS})
    tokenizer.add_special_tokens({"additional_special_tokens": [BLIP_ENC]})
    return tokenizer


def blip_config(state: dict[str, Tensor], path: Path, tokenizer: PreTrainedTokenizerBase,
                head_dim: int = HEAD_DIM) -> BlipConfig:
    """A captioning :class:`~transformers.BlipConfig` read from an original state dict's shapes.

    Args:
        state: The original state dict (``visual_encoder.*``, ``text_decoder.*``).
        path: Its file (for messages).
        tokenizer: The BLIP tokenizer (its pad/[SEP]/[DEC] ids become the config's).
        head_dim: Attention head width.

    Returns:
        The configuration.

    Raises:
        CheckpointConversionError: If a tower is absent or the tokenizer does not fit the decoder.
    """
    width = _need(state, "visual_encoder.cls_token", path).shape[-1]
    patch = _need(state, "visual_encoder.patch_embed.proj.weight", path).shape[-1]
    positions = _need(state, "visual_encoder.pos_embed", path).shape[1]
    vision_layers = _count(state, r"visual_encoder\.blocks\.(\d+)\.", path)
    vision_mlp = _need(state, "visual_encoder.blocks.0.mlp.fc1.weight", path).shape[0]
    words = _need(state, "text_decoder.bert.embeddings.word_embeddings.weight", path)
    text_positions = _need(state, "text_decoder.bert.embeddings.position_embeddings.weight",
                           path).shape[0]
    text_layers = _count(state, r"text_decoder\.bert\.encoder\.layer\.(\d+)\.", path)
    text_mlp = _need(state, "text_decoder.bert.encoder.layer.0.intermediate.dense.weight",
                     path).shape[0]
    cross = _need(state, "text_decoder.bert.encoder.layer.0.crossattention.self.key.weight",
                  path).shape[1]
    vocab, hidden = words.shape
    if cross != width:
        raise CheckpointConversionError(
            f"{path}: the decoder cross-attends to width {cross}, the ViT has width {width}"
        )
    if len(tokenizer) != vocab:
        raise CheckpointConversionError(
            f"{path}: the text decoder has {vocab} token embeddings but the tokenizer has "
            f"{len(tokenizer)} tokens with {BLIP_BOS}/{BLIP_ENC}; BLIP needs the "
            "bert-base-uncased vocabulary (bert-base-uncased/ or distilbert-base-uncased/)"
        )
    sep = tokenizer.sep_token_id
    return BlipConfig(
        vision_config={
            "hidden_size": width, "intermediate_size": vision_mlp,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": _heads(width, head_dim, path, "ViT"),
            "image_size": _grid(positions, path, "visual_encoder.pos_embed") * patch,
            "patch_size": patch, "hidden_act": "gelu", "layer_norm_eps": 1e-6,
        },
        text_config={
            "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": text_mlp,
            "num_hidden_layers": text_layers,
            "num_attention_heads": _heads(hidden, head_dim, path, "text decoder"),
            "max_position_embeddings": text_positions, "encoder_hidden_size": width,
            "hidden_act": "gelu", "layer_norm_eps": 1e-12,
            "bos_token_id": tokenizer.bos_token_id, "sep_token_id": sep, "eos_token_id": sep,
            "pad_token_id": tokenizer.pad_token_id,
        },
    )


_VIT_RULES: list[Rule] = [
    (r"visual_encoder\.cls_token", "vision_model.embeddings.class_embedding"),
    (r"visual_encoder\.pos_embed", "vision_model.embeddings.position_embedding"),
    (r"visual_encoder\.patch_embed\.proj\.(weight|bias)",
     r"vision_model.embeddings.patch_embedding.\1"),
    (r"visual_encoder\.blocks\.(\d+)\.norm([12])\.(weight|bias)",
     r"vision_model.encoder.layers.\1.layer_norm\2.\3"),
    (r"visual_encoder\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)",
     r"vision_model.encoder.layers.\1.self_attn.qkv.\2"),
    (r"visual_encoder\.blocks\.(\d+)\.attn\.proj\.(weight|bias)",
     r"vision_model.encoder.layers.\1.self_attn.projection.\2"),
    (r"visual_encoder\.blocks\.(\d+)\.mlp\.(fc[12])\.(weight|bias)",
     r"vision_model.encoder.layers.\1.mlp.\2.\3"),
    (r"visual_encoder\.norm\.(weight|bias)", r"vision_model.post_layernorm.\1"),
]
#: The BERT decoder keeps its names in transformers; the strict load rejects any extra module.
_DECODER_RULES: list[Rule] = [(r"(text_decoder\..+)", r"\1")]


def blip_from_original(path: Path | str, tokenizer: PreTrainedTokenizerBase,
                       head_dim: int = HEAD_DIM) -> BlipForConditionalGeneration:
    """Build a transformers BLIP captioner from a Salesforce BLIP checkpoint.

    Only the captioner's towers are read (``visual_encoder.*``, ``text_decoder.*``); other
    modules in the file (e.g. momentum encoders) are not part of captioning and are skipped.

    Args:
        path: ``model_base_caption_capfilt_large.pth`` / ``model_large_caption.pth`` (or any
            file with those keys).
        tokenizer: :func:`blip_tokenizer`.
        head_dim: Attention head width.

    Returns:
        The model in eval mode, float32.

    Raises:
        CheckpointConversionError: If keys are unmapped, missing or mis-shaped.
    """
    path = Path(path)
    state = load_original_state(path)
    config = blip_config(state, path, tokenizer, head_dim)
    mapping, unmapped = rename_keys(state, "visual_encoder.", _VIT_RULES)
    decoder, left = rename_keys(state, "text_decoder.", _DECODER_RULES, ignore=_BLIP_BUFFERS)
    mapping.update(decoder)
    unmapped += left
    # the output projection is tied to the word embeddings (and its bias to predictions.bias)
    for target, source in (("text_decoder.cls.predictions.decoder.weight",
                            "text_decoder.bert.embeddings.word_embeddings.weight"),
                           ("text_decoder.cls.predictions.decoder.bias",
                            "text_decoder.cls.predictions.bias")):
        if target not in mapping and source in mapping:
            mapping[target] = mapping[source]
    model = BlipForConditionalGeneration(config)
    load_strict(model, mapping, unmapped, path)
    return model.eval()


def blip_processor(tokenizer: PreTrainedTokenizerBase, image_size: int) -> BlipProcessor:
    """BLIP preprocessing (bicubic to ``image_size`` squared, CLIP mean/std) and tokenizer."""
    images = BlipImageProcessor(
        size={"height": image_size, "width": image_size}, resample=PILImageResampling.BICUBIC,
        image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD),
    )
    return BlipProcessor(image_processor=images, tokenizer=tokenizer)


# ----------------------------------------------------------------------------------------- CLIP


def _split_qkv(prefix: str) -> Callable[[re.Match[str], Tensor], list[tuple[str, Tensor]]]:
    def split(match: re.Match[str], tensor: Tensor) -> list[tuple[str, Tensor]]:
        if tensor.shape[0] % 3:
            return [(f"{match.group(0)} (not splittable in three)", tensor)]
        layer, kind = match.group(1), match.group(2)
        return [(f"{prefix}.{layer}.self_attn.{name}_proj.{kind}", part.clone())
                for name, part in zip("qkv", tensor.chunk(3, dim=0), strict=True)]

    return split


_CLIP_LAYERS = "vision_model.encoder.layers"
_CLIP_RULES: list[Rule] = [
    (r"visual\.conv1\.weight", "vision_model.embeddings.patch_embedding.weight"),
    (r"visual\.class_embedding", "vision_model.embeddings.class_embedding"),
    (r"visual\.positional_embedding", "vision_model.embeddings.position_embedding.weight"),
    (r"visual\.ln_pre\.(weight|bias)", r"vision_model.pre_layrnorm.\1"),
    (r"visual\.transformer\.resblocks\.(\d+)\.ln_([12])\.(weight|bias)",
     _CLIP_LAYERS + r".\1.layer_norm\2.\3"),
    (r"visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)",
     _split_qkv(_CLIP_LAYERS)),
    (r"visual\.transformer\.resblocks\.(\d+)\.attn\.out_proj\.(weight|bias)",
     _CLIP_LAYERS + r".\1.self_attn.out_proj.\2"),
    (r"visual\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.(weight|bias)",
     _CLIP_LAYERS + r".\1.mlp.fc1.\2"),
    (r"visual\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.(weight|bias)",
     _CLIP_LAYERS + r".\1.mlp.fc2.\2"),
    (r"visual\.ln_post\.(weight|bias)", r"vision_model.post_layernorm.\1"),
    (r"visual\.proj", lambda _m, t: [("visual_projection.weight", t.t().contiguous())]),
]


def clip_vision_config(state: dict[str, Tensor], path: Path,
                       head_dim: int = HEAD_DIM) -> CLIPVisionConfig:
    """A :class:`~transformers.CLIPVisionConfig` read from an OpenAI CLIP state dict's shapes.

    Raises:
        CheckpointConversionError: If the image tower is not a ViT (e.g. a ResNet CLIP).
    """
    conv = _need(state, "visual.conv1.weight", path)
    width, patch = conv.shape[0], conv.shape[-1]
    positions = _need(state, "visual.positional_embedding", path).shape[0]
    return CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=_need(state, "visual.transformer.resblocks.0.mlp.c_fc.weight",
                                path).shape[0],
        num_hidden_layers=_count(state, r"visual\.transformer\.resblocks\.(\d+)\.", path),
        num_attention_heads=_heads(width, head_dim, path, "CLIP ViT"),
        image_size=_grid(positions, path, "visual.positional_embedding") * patch,
        patch_size=patch, projection_dim=_need(state, "visual.proj", path).shape[1],
        hidden_act="quick_gelu", layer_norm_eps=1e-5,
    )


def clip_vision_from_original(path: Path | str,
                              head_dim: int = HEAD_DIM) -> CLIPVisionModelWithProjection:
    """Build CLIP's image tower with projection from an OpenAI ``clip`` checkpoint.

    Every ``visual.*`` key is mapped (fused ``in_proj`` split into q/k/v, ``proj`` transposed);
    the text tower's keys are not needed for image-image similarity and are skipped.

    Args:
        path: ``ViT-L-14.pt`` (TorchScript) or a plain state dict file with OpenAI's keys.
        head_dim: Attention head width.

    Returns:
        The model in eval mode, float32 (the archive stores float16).

    Raises:
        CheckpointConversionError: If keys are unmapped, missing or mis-shaped.
    """
    path = Path(path)
    state = load_original_state(path)
    model = CLIPVisionModelWithProjection(clip_vision_config(state, path, head_dim))
    mapping, unmapped = rename_keys(state, "visual.", _CLIP_RULES)
    load_strict(model, mapping, unmapped, path)
    return model.eval()


def convert_to_dir(kind: str, path: Path | str, out_dir: Path | str,
                   tokenizer_dir: Path | str | None = None) -> Path:
    """Convert an original file once and save it as a transformers directory (fast later loads).

    Args:
        kind: ``blip`` or ``clip``.
        path: The original checkpoint.
        out_dir: Output directory (``config.json``, weights, and for BLIP the processor files).
        tokenizer_dir: BLIP only: ``bert-base-uncased`` or ``distilbert-base-uncased``.

    Returns:
        ``out_dir``.

    Raises:
        ValueError: If ``kind`` is unknown or BLIP lacks ``tokenizer_dir``.
    """
    out = Path(out_dir)
    if kind == "blip":
        if tokenizer_dir is None:
            raise ValueError("converting BLIP needs the bert-base-uncased tokenizer directory")
        tokenizer = blip_tokenizer(tokenizer_dir)
        model = blip_from_original(path, tokenizer)
        model.save_pretrained(out)
        blip_processor(tokenizer, int(model.config.vision_config.image_size)).save_pretrained(out)
    elif kind == "clip":
        clip_vision_from_original(path).save_pretrained(out)
    else:
        raise ValueError(f"unknown kind {kind!r}: blip or clip")
    return out
