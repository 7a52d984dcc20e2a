"""Write small randomly initialised diffusion backbones in the Stable Diffusion folder layout.

These are the untrained starting points of the SynthEgo text-to-image model (``lego.zoo``) and
the random backbones of ``python -m lego bootstrap`` (tests, and users who want a backbone of a
chosen size). The SynthEgo diffusion backbone (``<root>/synthego-sd``):

* ``vae/``: the lossless pixel-unshuffle autoencoder (factor 4: 48 latent channels, scaling 3.0);
* ``text_encoder/`` + ``tokenizer/``: a frozen, randomly initialised ``CLIPTextModel`` (hidden 64,
  2 layers) over a word-level ``CLIPTokenizer`` of the SynthEgo vocabulary;
* ``unet/``: a text-to-image ``UNet2DConditionModel`` (32, 64 channels, cross-attention at both
  levels) whose input the diffusion modules widen for the input frame, as for Stable Diffusion;
* ``scheduler/``: Stable Diffusion's noise schedule (scaled-linear betas, 1000 steps).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from lego.models.editing.autoencoder import PixelUnshuffleAutoencoder

#: Folder (under the pretrained root) of the SynthEgo diffusion backbone.
SYNTHEGO_SD = "synthego-sd"
#: Latent scaling of the SynthEgo autoencoder: SynthEgo pixels in [-1, 1] have a std of about
#: 0.3, so 3.0 brings the diffusion data to unit variance, as 0.18215 does for SD's VAE latents
#: (measured: lower validation loss and cleaner samples than 1.0 after 700 steps).
SYNTHEGO_SCALING = 3.0

#: How CLIP's tokenizer splits text before BPE (letters, single digits, other symbol runs).
_CLIP_WORDS = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+")
_ALPHABET = list("abcdefghijklmnopqrstuvwxyz0123456789") + list(".,;:!?'\"#-()/&")


def learn_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """Learn BPE merges that build every word into one token, deterministically.

    Standard BPE on the set of words (each counted once, its last symbol carrying ``</w>``):
    repeatedly merge the most frequent adjacent pair, ties broken by the pair's text, until every
    word is one symbol. Encoding a learned word applies the same merges in the same order, so it
    comes out whole.

    Args:
        words: The words (already split as CLIP splits text).

    Returns:
        The merges in rank order.
    """
    words = sorted(set(words))
    sequences = [[*w[:-1], w[-1] + "</w>"] for w in words if w]
    merges: list[tuple[str, str]] = []
    while True:
        counts: Counter[tuple[str, str]] = Counter()
        for seq in sequences:
            counts.update(zip(seq, seq[1:], strict=False))
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        merged = best[0] + best[1]
        for k, seq in enumerate(sequences):
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            sequences[k] = out


def write_word_tokenizer(out_dir: Path, words: Iterable[str], max_length: int = 77) -> Path:
    """Write a ``CLIPTokenizer`` whose BPE keeps every given word as a single token.

    The vocabulary is CLIP's special tokens, every single character (alone and word-final), then
    the merged symbols of :func:`learn_merges` on the words as CLIP splits them, in merge order:
    known words map to one token, unknown ones to characters, and the same words always give the
    same files.

    Args:
        out_dir: The tokenizer folder to write.
        words: The vocabulary (any case; CLIP lower-cases).
        max_length: ``model_max_length`` of the tokenizer (77 as CLIP).

    Returns:
        ``out_dir``.
    """
    pieces = sorted({p for w in words for p in _CLIP_WORDS.findall(w.lower())})
    merges = learn_merges(pieces)
    symbols = ["<|startoftext|>", "<|endoftext|>"]
    symbols += _ALPHABET + [c + "</w>" for c in _ALPHABET]
    symbols += [c for p in pieces for c in p if c not in _ALPHABET]
    symbols += [c + "</w>" for p in pieces for c in p[-1:] if c not in _ALPHABET]
    symbols += [a + b for a, b in merges]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(symbols))}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def write_text_encoder(
    root: Path,
    words: Iterable[str],
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
) -> Path:
    """Write ``tokenizer/`` and a randomly initialised ``text_encoder/`` (CLIPTextModel).

    Args:
        root: The model folder.
        words: The vocabulary of the tokenizer.
        hidden_size: Width of the encoder (the UNet's cross-attention width).
        num_layers: Transformer layers.
        num_heads: Attention heads.
        seed: Seed of the random weights.

    Returns:
        ``root / "text_encoder"``.
    """
    write_word_tokenizer(root / "tokenizer", words)
    tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer")
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    CLIPTextModel(config).save_pretrained(root / "text_encoder")
    return root / "text_encoder"


def write_unet(
    root: Path,
    latent_channels: int,
    cross_attention_dim: int,
    sample_size: int,
    block_out_channels: Sequence[int] = (32, 64),
    head_dim: int = 16,
    seed: int = 0,
) -> Path:
    """Write a randomly initialised text-to-image ``unet/`` (cross-attention at every level).

    Attention heads are ``head_dim`` wide at every level (``channels // head_dim`` heads; one head
    where a level is narrower than ``head_dim``). diffusers' ``attention_head_dim`` is a head
    *count* (a naming quirk it keeps for Stable Diffusion); its default of 8 heads would make
    4-wide heads at 32 channels, which cost twice the time per training step on a CPU for the
    same parameters.

    Args:
        root: The model folder.
        latent_channels: Input and output channels (the autoencoder's latent channels).
        cross_attention_dim: Width of the text embedding.
        sample_size: Latent side length.
        block_out_channels: Channels per resolution level.
        head_dim: Width of an attention head.
        seed: Seed of the random weights.

    Returns:
        ``root / "unet"``.

    Raises:
        ValueError: If a level wider than ``head_dim`` is not a multiple of it.
    """
    levels = len(block_out_channels)
    heads = []
    for channels in block_out_channels:
        count = max(1, channels // head_dim)
        if channels > head_dim and channels % head_dim:
            raise ValueError(
                f"block_out_channels {tuple(block_out_channels)}: {channels} channels do not "
                f"split into heads of {head_dim}"
            )
        heads.append(count)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * levels,
        up_block_types=("CrossAttnUpBlock2D",) * levels,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=tuple(heads),
        norm_num_groups=min(32, min(block_out_channels)),
    )
    unet.save_pretrained(root / "unet")
    return root / "unet"


def write_scheduler(root: Path) -> Path:
    """Write Stable Diffusion's training noise schedule as ``scheduler/``.

    Args:
        root: The model folder.

    Returns:
        ``root / "scheduler"``.
    """
    DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
    ).save_pretrained(root / "scheduler")
    return root / "scheduler"


def write_kl_autoencoder(root: Path, resolution: int, seed: int = 0) -> Path:
    """Write a small randomly initialised ``AutoencoderKL`` (factor 2, 4 latent channels).

    Args:
        root: The model folder.
        resolution: Frame side (``sample_size``).
        seed: Seed of the random weights.

    Returns:
        ``root / "vae"``.
    """
    torch.manual_seed(seed)
    AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=resolution,
    ).save_pretrained(root / "vae")
    return root / "vae"


def write_diffusion_backbone(
    root: Path,
    words: Iterable[str],
    resolution: int = 64,
    downscale_factor: int = 4,
    hidden_size: int = 64,
    block_out_channels: Sequence[int] = (32, 64),
    head_dim: int = 16,
    autoencoder: Literal["pixel_unshuffle", "kl"] = "pixel_unshuffle",
    scaling_factor: float = SYNTHEGO_SCALING,
    seed: int = 0,
) -> Path:
    """Write a complete small diffusion backbone (vae, text encoder, tokenizer, unet, scheduler).

    Args:
        root: The model folder.
        words: Vocabulary of the tokenizer.
        resolution: Frame side the UNet's ``sample_size`` is set for.
        downscale_factor: Pixel-unshuffle factor of the autoencoder.
        hidden_size: Text encoder width = UNet cross-attention width.
        block_out_channels: UNet channels per level.
        head_dim: Width of the UNet's attention heads.
        autoencoder: ``pixel_unshuffle`` (lossless, the SynthEgo default) or ``kl`` (a small
            random ``AutoencoderKL`` with Stable Diffusion's 4 latent channels, factor 2).
        scaling_factor: Latent scaling of the pixel-unshuffle autoencoder.
        seed: Seed of the random weights.

    Returns:
        ``root``.
    """
    if autoencoder == "kl":
        write_kl_autoencoder(root, resolution, seed)
        downscale_factor = 2
    else:
        PixelUnshuffleAutoencoder(
            downscale_factor=downscale_factor, scaling_factor=scaling_factor
        ).save_pretrained(root / "vae")
    vae_config = AutoencoderKL.load_config(root / "vae")
    write_text_encoder(root, words, hidden_size=hidden_size, seed=seed)
    write_unet(
        root,
        latent_channels=int(vae_config["latent_channels"]),
        cross_attention_dim=hidden_size,
        sample_size=resolution // downscale_factor,
        block_out_channels=block_out_channels,
        head_dim=head_dim,
        seed=seed,
    )
    write_scheduler(root)
    return root


def write_synthego_diffusion(out_dir: Path) -> Path:
    """Write a random SynthEgo-size diffusion backbone to ``<out_dir>/synthego-sd``.

    Args:
        out_dir: The pretrained root (``pretrained/``).

    Returns:
        The written model folder.
    """
    from lego.synthego import vocabulary

    return write_diffusion_backbone(Path(out_dir) / SYNTHEGO_SD, vocabulary())
