"""Write a small LLaVA-architecture VLM (the SynthEgo stand-in for LLaVA) in transformers layout.

The model is a ``LlavaForConditionalGeneration`` with a tiny CLIP vision tower and a tiny Llama
language model over a word-level tokenizer built offline (with ``tokenizers``) from the SynthEgo
vocabulary and the paper's conversation template. Its projector is linear (identity activation),
like the paper's single-``Linear`` projector. It is written with ``save_pretrained`` so that it
loads through exactly the same ``from_pretrained`` path as a hub LLaVA.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from lego.models.instruct.network import LEGO_QUERY, LLAMA2_CONVERSATION, LLAVA_SYSTEM_PROMPT

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]


def build_word_tokenizer(
    words: Iterable[str], texts: Iterable[str] = ()
) -> PreTrainedTokenizerFast:
    """Build a word-level tokenizer covering ``words`` and every word of ``texts``.

    Spaces are kept as a ``▁`` prefix (as SentencePiece does) so that decoding restores the
    text exactly; punctuation and newlines are separate tokens. BOS is prepended on encoding.

    Args:
        words: Words to cover (each also with a leading space and capitalised).
        texts: Full texts whose pieces must be covered (e.g. the prompt template).

    Returns:
        The tokenizer (``<s>``, ``</s>``, ``<unk>``, ``<pad>``, ``<image>`` special tokens).
    """
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never"),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    corpus = list(texts)
    for word in words:
        for form in {word, word.lower(), word[:1].upper() + word[1:]}:
            corpus += [form, f" {form}"]
    tok.train_from_iterator(
        corpus, trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1)
    )
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        model_max_length=2048,
    )


def write_synthego_vlm(
    out_dir: Path,
    vocabulary: list[str] | None = None,
    image_size: int = 64,
    patch_size: int = 8,
    vision_hidden: int = 64,
    vision_layers: int = 2,
    text_hidden: int = 128,
    text_layers: int = 2,
    heads: int = 4,
    seed: int = 0,
    extra_texts: Sequence[str] = (),
) -> Path:
    """Write a tiny randomly initialised LLaVA (model, processor, tokenizer) to ``out_dir``.

    Args:
        out_dir: Output directory (created).
        vocabulary: Words the tokenizer must cover; default ``lego.synthego.vocabulary()``.
        image_size: Vision input side (the processor resizes the shortest edge and crops to it).
        patch_size: Vision patch size; ``(image_size / patch_size) ** 2`` image tokens.
        vision_hidden: CLIP vision hidden size.
        vision_layers: CLIP vision layers.
        text_hidden: Llama hidden size (the embedding dimension D of the feature cache).
        text_layers: Llama layers.
        heads: Attention heads of both towers.
        seed: Initialisation seed.
        extra_texts: More texts whose words the tokenizer must cover (e.g. pretraining
            questions).

    Returns:
        ``out_dir``.

    Raises:
        ValueError: If ``image_size`` is not a multiple of ``patch_size``.
    """
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    if vocabulary is None:
        from lego.synthego import vocabulary as synthego_vocabulary

        vocabulary = synthego_vocabulary()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    template = LLAMA2_CONVERSATION.format(
        system=LLAVA_SYSTEM_PROMPT, question=LEGO_QUERY.format(action="pick up the cup")
    )
    tokenizer = build_word_tokenizer(vocabulary, [template, *extra_texts])
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    vision = CLIPVisionConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=vision_hidden,
        intermediate_size=2 * vision_hidden,
        num_hidden_layers=vision_layers,
        num_attention_heads=heads,
        projection_dim=vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=text_hidden,
        intermediate_size=2 * text_hidden,
        num_hidden_layers=text_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(image_size // patch_size) ** 2,
        projector_hidden_act="linear",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
