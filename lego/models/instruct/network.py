r"""LLaVA networks for visual instruction tuning: loading, peft, prompts, label masking, generation.

Pure transformers / peft code (no Lightning): the LightningModule in ``module.py`` drives it.

The official template (``conv_llava_llama_2`` of the paper's code) renders one round as::

    [INST] <<SYS>>\n{system}\n<</SYS>>\n\n<image>\n{question} [/INST] {answer}</s>

Only ``{answer}`` and the end-of-sequence token are supervised; BOS, the instruction and the
image token positions get the ignore index (-100).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch import Tensor, nn
from transformers import (
    AutoProcessor,
    LlavaForConditionalGeneration,
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from lego.errors import UserError

#: Label value ignored by the cross-entropy loss.
IGNORE_INDEX = -100

#: System prompt of LLaVA's ``llava_llama_2`` conversation (the paper's template).
LLAVA_SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using natural "
    "language."
)
#: LLaMA-2 chat rendering of one user turn with the image first, up to the assistant's answer.
LLAMA2_CONVERSATION = "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n<image>\n{question} [/INST]"
#: The paper's query; ``{action}`` is the cleaned action label.
LEGO_QUERY = "How does the person properly {action} that is displayed in the video frame?"
#: peft target regex: the language model's linear layers only (never the CLIP vision tower).
LANGUAGE_MODEL_LORA_TARGETS = (
    r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
)
#: Number of generated-token hidden states kept as the text embedding (CLIP's context length).
TEXT_EMBEDDING_LENGTH = 77

TorchDtype = Literal["float32", "bfloat16", "float16"]


class PromptError(UserError, ValueError):
    """A sample cannot be turned into a prompt (empty or overlong action, missing answer)."""


@dataclass(frozen=True)
class PromptTemplate:
    """How a question and answer are rendered for the VLM.

    Attributes:
        system: System prompt.
        conversation: Rendering of the user turn; must contain ``{question}`` and the image
            placeholder ``<image>``, may contain ``{system}``.
        query: The question asked per sample; ``{action}`` is replaced by the action label.
        use_chat_template: Render with the processor's own chat template instead of
            ``conversation`` (only when the processor has one).
        image_token: The image placeholder in ``conversation``.
    """

    system: str = LLAVA_SYSTEM_PROMPT
    conversation: str = LLAMA2_CONVERSATION
    query: str = LEGO_QUERY
    use_chat_template: bool = False
    image_token: str = "<image>"

    def question(self, action: str, where: str, max_chars: int = 1000) -> str:
        """Fill the query with an action label.

        Args:
            action: The cleaned action label.
            where: The sample, for error messages.
            max_chars: Longest accepted action label.

        Returns:
            The question.

        Raises:
            PromptError: If the action is empty or longer than ``max_chars``.
        """
        if not isinstance(action, str) or not action.strip():
            raise PromptError(f"{where}: empty action label")
        if len(action) > max_chars:
            raise PromptError(
                f"{where}: action label of {len(action)} characters is longer than {max_chars}"
            )
        return self.query.format(action=action.strip())

    def render(self, question: str, processor: Any) -> str:
        """Render the prompt up to (and including) the assistant's turn marker.

        Args:
            question: The user question.
            processor: The model's processor (for its chat template).

        Returns:
            The prompt text, with the image placeholder of the processor.

        Raises:
            ValueError: If ``use_chat_template`` is set and the processor has none.
        """
        if self.use_chat_template:
            if not getattr(processor, "chat_template", None):
                raise ValueError(
                    "use_chat_template is set but the processor has no chat_template; "
                    "use the conversation string instead"
                )
            messages = [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": question}],
                }
            ]
            return str(processor.apply_chat_template(messages, add_generation_prompt=True))
        text = self.conversation.format(system=self.system, question=question)
        token = getattr(processor, "image_token", self.image_token)
        return text.replace(self.image_token, token)

    def describe(self) -> dict[str, Any]:
        """The template as a JSON-serialisable dict (recorded in the feature cache manifest)."""
        return {
            "system": self.system,
            "conversation": self.conversation,
            "query": self.query,
            "use_chat_template": self.use_chat_template,
        }


def torch_dtype(name: TorchDtype) -> torch.dtype:
    """Map a dtype name to the torch dtype."""
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_vlm(
    name_or_path: str | Path, dtype: TorchDtype = "float32"
) -> tuple[LlavaForConditionalGeneration, Any]:
    """Load a LLaVA model and its processor with ``from_pretrained`` (hub id or local dir).

    Args:
        name_or_path: Hub id (e.g. ``llava-hf/llava-1.5-7b-hf``) or a local directory.
        dtype: Weight dtype.

    Returns:
        ``(model, processor)``.

    Raises:
        ValueError: If the processor does not know the vision patch size (needed to expand the
            image placeholder into one token per patch).
    """
    model = LlavaForConditionalGeneration.from_pretrained(
        str(name_or_path), dtype=torch_dtype(dtype)
    )
    processor = AutoProcessor.from_pretrained(str(name_or_path))
    if getattr(processor, "patch_size", None) is None:
        raise ValueError(
            f"{name_or_path}: the processor has no patch_size; set it (and "
            "vision_feature_select_strategy) in processor_config.json"
        )
    return model, processor


def find_projector(model: nn.Module) -> nn.Module:
    """Return the multimodal projector of a (possibly peft-wrapped) LLaVA model.

    Args:
        model: A ``LlavaForConditionalGeneration`` or a peft model around one.

    Returns:
        The outermost module named ``multi_modal_projector`` (peft's wrapper when the projector
        is in ``modules_to_save``).

    Raises:
        ValueError: If there is no projector.
    """
    found = [
        (n, m) for n, m in model.named_modules() if n.split(".")[-1] == "multi_modal_projector"
    ]
    if not found:
        raise ValueError("model has no multi_modal_projector")
    return min(found, key=lambda item: len(item[0]))[1]


def inner_projector(model: nn.Module) -> nn.Module:
    """The projector whose weights are in use (the trained copy under peft's wrapper)."""
    projector = find_projector(model)
    if hasattr(projector, "modules_to_save") and hasattr(projector, "active_adapters"):
        adapter = projector.active_adapters[0]
        return projector.modules_to_save[adapter]
    return projector


def fold_projector(model: nn.Module) -> tuple[Tensor, Tensor] | None:
    """Fold a linear projector (``linear_2(act(linear_1(x)))`` with identity ``act``) into one map.

    The paper's projector is a single ``Linear(1024, 5120)``, imported into transformers as
    ``linear_1`` plus an identity activation and an identity ``linear_2``. Such a projector can
    be stored once next to the feature cache, and the cache can hold the (4-5x smaller) vision
    features instead of the projected tokens.

    Args:
        model: The LLaVA model (peft-wrapped or not).

    Returns:
        ``(weight D x Dv, bias D)`` in float32, or ``None`` when the projector is not linear.
    """
    proj = inner_projector(model)
    act = getattr(proj, "act", None)
    if not (isinstance(act, nn.Identity) or type(act).__name__ == "LinearActivation"):
        return None
    l1, l2 = proj.linear_1, proj.linear_2
    w1, w2 = l1.weight.detach().float(), l2.weight.detach().float()
    b1 = l1.bias.detach().float() if l1.bias is not None else torch.zeros(w1.shape[0])
    b2 = l2.bias.detach().float() if l2.bias is not None else torch.zeros(w2.shape[0])
    return (w2 @ w1).cpu(), (w2 @ b1.to(w2.device) + b2.to(w2.device)).cpu()


def find_final_norm(model: nn.Module) -> nn.Module | None:
    """The language model's final norm (its output is the last-layer, post-norm hidden state).

    Args:
        model: The LLaVA model (peft-wrapped or not).

    Returns:
        The module, or ``None`` when the language model has no ``norm`` attribute.
    """
    for name, module in model.named_modules():
        if name.split(".")[-1] == "language_model" and isinstance(
            getattr(module, "norm", None), nn.Module
        ):
            return module.norm
    return None


def freeze_vision_tower(model: nn.Module) -> None:
    """Freeze every parameter of the vision tower (as the paper's code does)."""
    for name, param in model.named_parameters():
        if "vision_tower" in name:
            param.requires_grad_(False)


def apply_lora(
    model: LlavaForConditionalGeneration,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: str = LANGUAGE_MODEL_LORA_TARGETS,
    train_projector: bool = True,
) -> nn.Module:
    """Wrap the model with peft LoRA on the language model only.

    Args:
        model: The LLaVA model.
        r: LoRA rank.
        alpha: LoRA alpha.
        dropout: LoRA dropout.
        target_modules: Regex of the module names to adapt; must not match the vision tower.
        train_projector: Train the projector fully (peft ``modules_to_save``).

    Returns:
        The peft model.

    Raises:
        ValueError: If the regex matches a vision tower module.
    """
    from peft import LoraConfig, get_peft_model

    hits = [n for n, _ in model.named_modules() if re.fullmatch(target_modules, n)]
    if not hits:
        raise ValueError(f"LoRA target regex {target_modules!r} matches no module")
    vision = [n for n in hits if "vision_tower" in n]
    if vision:
        raise ValueError(f"LoRA target regex {target_modules!r} hits the vision tower: {vision[0]}")
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        modules_to_save=["multi_modal_projector"] if train_projector else None,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    freeze_vision_tower(peft_model)
    return peft_model


def prepare_full_finetuning(model: LlavaForConditionalGeneration, train_projector: bool) -> None:
    """Train the whole language model (and the projector), freeze the vision tower.

    Args:
        model: The LLaVA model.
        train_projector: Train the projector too (the paper does).
    """
    for name, param in model.named_parameters():
        param.requires_grad_("vision_tower" not in name)
        if "multi_modal_projector" in name and not train_projector:
            param.requires_grad_(False)


@dataclass
class TrainingInputs:
    """A right-padded training batch: ids, mask, labels (answer + EOS only) and pixels."""

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor
    pixel_values: Tensor


def eos_id(processor: Any) -> int:
    """The tokenizer's end-of-sequence id.

    Raises:
        ValueError: If the tokenizer has none.
    """
    eos = processor.tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token; supervision needs one")
    return int(eos)


def build_training_inputs(
    processor: Any,
    images: Sequence[Image.Image],
    prompts: Sequence[str],
    answers: Sequence[str],
    where: Sequence[str],
    max_length: int,
) -> TrainingInputs:
    """Tokenize prompt + answer pairs and mask everything but the answer and EOS.

    The prompt and the full text are tokenized by the processor (so the image placeholder is
    expanded exactly as at inference); the prompt's tokens must be a prefix of the full text's.

    Args:
        processor: The LLaVA processor.
        images: One RGB image per sample.
        prompts: Rendered prompts (see :meth:`PromptTemplate.render`).
        answers: Target answers.
        where: Names of the samples, for error messages.
        max_length: Longest accepted sequence (prompt, image tokens and answer).

    Returns:
        The batch.

    Raises:
        PromptError: If an answer is empty, a sequence is too long, or the prompt tokens are not
            a prefix of the full sequence.
    """
    for answer, name in zip(answers, where, strict=True):
        if not isinstance(answer, str) or not answer.strip():
            raise PromptError(f"{name}: empty or missing answer")
    fulls = [f"{p} {a.strip()}" for p, a in zip(prompts, answers, strict=True)]
    n = len(prompts)
    tokenizer = processor.tokenizer
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        enc = processor(
            text=fulls + list(prompts),
            images=list(images) * 2,
            return_tensors="pt",
            padding=True,
        )
    finally:
        tokenizer.padding_side = previous_side
    lengths = enc["attention_mask"].sum(dim=1).tolist()
    eos = eos_id(processor)
    ids_list, label_list = [], []
    for i in range(n):
        full_ids = enc["input_ids"][i, : lengths[i]].tolist()
        prompt_ids = enc["input_ids"][n + i, : lengths[n + i]].tolist()
        if full_ids[: len(prompt_ids)] != prompt_ids or len(full_ids) == len(prompt_ids):
            raise PromptError(
                f"{where[i]}: the prompt's tokens are not a prefix of prompt + answer "
                "(the tokenizer merges across the answer boundary)"
            )
        if full_ids[-1] != eos:
            full_ids.append(eos)
        if len(full_ids) > max_length:
            raise PromptError(
                f"{where[i]}: {len(full_ids)} tokens (prompt, image and answer) exceed "
                f"max_length {max_length}"
            )
        labels = [IGNORE_INDEX] * len(prompt_ids) + full_ids[len(prompt_ids) :]
        ids_list.append(full_ids)
        label_list.append(labels)
    pad = tokenizer.pad_token_id
    pad = eos if pad is None else int(pad)
    length = max(len(x) for x in ids_list)
    input_ids = torch.full((n, length), pad, dtype=torch.long)
    labels_t = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((n, length), dtype=torch.long)
    for i, (ids, labels) in enumerate(zip(ids_list, label_list, strict=True)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels_t[i, : len(labels)] = torch.tensor(labels)
        mask[i, : len(ids)] = 1
    pixel_values = enc["pixel_values"][:n]
    return TrainingInputs(input_ids, mask, labels_t, pixel_values)


def sample_seed(base_seed: int, sample_id: str) -> int:
    """A per-sample seed that depends only on the base seed and the sample id."""
    return (base_seed * 1_000_003 + zlib.crc32(sample_id.encode("utf-8"))) % (2**63 - 1)


_MASK32 = 0xFFFFFFFF


def _mul32(x: Tensor, factor: int) -> Tensor:
    """``x * factor mod 2**32`` for int64 tensors of uint32 values (no int64 overflow)."""
    low, high = factor & 0xFFFF, factor >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def hash32(x: Tensor) -> Tensor:
    """A 32-bit integer mixing function (the "lowbias32" xor-shift-multiply hash), elementwise.

    Args:
        x: int64 tensor of values in ``[0, 2**32)``.

    Returns:
        int64 tensor of hashed values in ``[0, 2**32)``.
    """
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def counter_uniform(seeds: Tensor, step: int, index: Tensor) -> Tensor:
    """Uniform numbers in (0, 1) that are a pure function of (seed, step, index).

    Each number hashes its ``(seed, step, index)``: nothing depends on other rows, on the device
    or on a generator's state, and the work is a few vectorised integer ops.

    Args:
        seeds: int64 tensor of non-negative seeds (below ``2**63``).
        step: The decoding step.
        index: int64 tensor of token ids, broadcastable with ``seeds``.

    Returns:
        float64 tensor of the broadcast shape.
    """
    key = hash32(hash32(index) ^ (step & _MASK32))
    key = hash32(key ^ (seeds & _MASK32))
    key = hash32(key ^ (seeds >> 32))
    return (key.to(torch.float64) + 0.5) / 2.0**32


class PerSampleGumbelSampler(LogitsProcessor):
    """Sampling with one random stream per batch row, as a logits processor for greedy search.

    Adding Gumbel noise to the (temperature-scaled, filtered) log-probabilities and taking the
    argmax draws from the softmax distribution (the Gumbel-max trick). The noise of row ``i`` at
    decoding step ``t`` for token ``v`` is a hash of ``(seeds[i], t, v)`` (counter-based, see
    :func:`counter_uniform`), so a sample's tokens do not depend on the other samples of its
    batch, and the noise is drawn on the logits' device in one vectorised step (a batch-16 GPU
    decode step does not wait for sixteen host-side generators). Only the tokens that the
    filters before it leave drawable get noise.

    Args:
        seeds: One seed per batch row.
    """

    def __init__(self, seeds: Sequence[int]) -> None:
        self.seeds = torch.tensor([int(s) % (2**63) for s in seeds], dtype=torch.int64)
        self.start: int | None = None

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        """Return Gumbel-perturbed log-probabilities (their argmax is a sample)."""
        if self.start is None:
            self.start = input_ids.shape[1]
        if self.seeds.device != scores.device:
            self.seeds = self.seeds.to(scores.device)
        step = input_ids.shape[1] - self.start
        logp = torch.log_softmax(scores.float(), dim=-1)

        def gumbel(seeds: Tensor, tokens: Tensor) -> Tensor:
            return (-torch.log(-torch.log(counter_uniform(seeds, step, tokens)))).to(logp.dtype)

        drawable = torch.isfinite(logp)
        if drawable.all():
            tokens = torch.arange(logp.shape[-1], device=logp.device)
            return logp + gumbel(self.seeds.unsqueeze(1), tokens.unsqueeze(0))
        # noise only where a token can still be drawn (top-k / top-p leave -inf elsewhere)
        rows, cols = drawable.nonzero(as_tuple=True)
        out = torch.full_like(logp, float("-inf"))
        out[rows, cols] = logp[rows, cols] + gumbel(self.seeds[rows], cols)
        return out


@dataclass
class GenerationResult:
    """Per-sample outputs of :func:`generate_with_embeddings`.

    Attributes:
        texts: Decoded generated text (special tokens removed, stripped).
        num_tokens: Generated tokens per sample, EOS included.
        vision_features: Projector inputs, ``B x N_img x Dv`` (the selected vision features).
        image_embeddings: Projector outputs, ``B x N_img x D``.
        text_embeddings: Last-layer (post-norm) hidden state of each generated step,
            ``B x length x D``, zero beyond ``num_tokens``.
        text_mask: ``B x length`` bool, True on valid rows.
    """

    texts: list[str]
    num_tokens: list[int]
    vision_features: Tensor
    image_embeddings: Tensor
    text_embeddings: Tensor
    text_mask: Tensor


def generate_with_embeddings(
    model: nn.Module,
    processor: Any,
    images: Sequence[Image.Image],
    prompts: Sequence[str],
    seeds: Sequence[int],
    temperature: float = 0.2,
    top_k: int | None = 50,
    top_p: float | None = None,
    max_new_tokens: int = 1024,
    text_length: int = TEXT_EMBEDDING_LENGTH,
) -> GenerationResult:
    """Generate descriptions (batched, left padded) and collect the VLM embeddings.

    The text embedding is the output of the language model's final norm at the last position
    of each forward step (captured with a hook, which equals ``generate``'s last
    ``hidden_states`` entry without keeping every layer's states).

    Args:
        model: The LLaVA model (peft-wrapped or not), in eval mode.
        processor: Its processor.
        images: One RGB image per prompt.
        prompts: Rendered prompts.
        seeds: One sampling seed per prompt.
        temperature: Sampling temperature; 0 decodes greedily.
        top_k: Keep the k most likely tokens before sampling (None: all).
        top_p: Nucleus sampling threshold (None: off).
        max_new_tokens: Most tokens generated per sample.
        text_length: Rows of the text embedding (truncated or zero-padded).

    Returns:
        The generated texts and embeddings.
    """
    tokenizer = processor.tokenizer
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = processor(text=list(prompts), images=list(images), return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = previous_side
    device = next(model.parameters()).device
    dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
    enc = {k: v.to(device) for k, v in enc.items()}
    enc["pixel_values"] = enc["pixel_values"].to(dtype)
    processors = LogitsProcessorList()
    if temperature > 0:
        processors.append(TemperatureLogitsWarper(temperature))
        if top_k:
            processors.append(TopKLogitsWarper(top_k))
        if top_p is not None and top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p))
        processors.append(PerSampleGumbelSampler(seeds))
    captured: dict[str, Tensor] = {}
    steps_out: list[Tensor] = []

    def projector_hook(_module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        if "image" not in captured:
            captured["vision"] = args[0].detach()
            captured["image"] = output.detach()

    def norm_hook(_module: nn.Module, _args: tuple[Tensor, ...], output: Tensor) -> None:
        steps_out.append(output[:, -1].detach())

    handles = [find_projector(model).register_forward_hook(projector_hook)]
    final_norm = find_final_norm(model)
    if final_norm is not None:
        handles.append(final_norm.register_forward_hook(norm_hook))
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    try:
        with torch.no_grad():
            out = model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                logits_processor=processors,
                output_hidden_states=final_norm is None,
                return_dict_in_generate=True,
                pad_token_id=pad,
                eos_token_id=eos,
                temperature=None,
                top_k=None,
                top_p=None,
            )
    finally:
        for handle in handles:
            handle.remove()
    prompt_len = enc["input_ids"].shape[1]
    generated = out.sequences[:, prompt_len:]
    if final_norm is None:
        steps = torch.stack([h[-1][:, -1] for h in out.hidden_states], dim=1)  # B x T x D
    else:
        steps = torch.stack(steps_out[: generated.shape[1]], dim=1)
    batch, total, dim = steps.shape
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    num_tokens = []
    for row in generated.tolist():
        n = next((i + 1 for i, t in enumerate(row) if t in eos_ids), len(row))
        num_tokens.append(max(1, min(n, total)))
    text = torch.zeros(batch, text_length, dim, dtype=steps.dtype, device=steps.device)
    mask = torch.zeros(batch, text_length, dtype=torch.bool)
    for i, n in enumerate(num_tokens):
        k = min(n, text_length)
        text[i, :k] = steps[i, :k]
        mask[i, :k] = True
    texts = [
        tokenizer.decode(generated[i, : num_tokens[i]], skip_special_tokens=True).strip()
        for i in range(batch)
    ]
    return GenerationResult(
        texts=texts,
        num_tokens=num_tokens,
        vision_features=captured["vision"],
        image_embeddings=captured["image"],
        text_embeddings=text,
        text_mask=mask,
    )


def warmup_steps(total_steps: int, ratio: float) -> int:
    """``ceil(ratio * total_steps)`` warmup steps (DeepSpeed WarmupLR's count in the paper)."""
    return int(math.ceil(ratio * max(0, total_steps)))
