"""The SynthEgo VLM: the miniature's LLaVA, pretrained until it grounds the objects asked about.

A ``LlavaForConditionalGeneration`` (CLIP vision tower, linear projector, Llama language model
over the SynthEgo word tokenizer) learns, on table tops of its own split, to answer questions
about one object of a crowded scene: its colour, its place and the hand on its side. Two phases,
as LLaVA's vision tower comes pretrained:

1. **Vision tower** (``vision_steps``): dense supervision of the tower's projector-input features
   by linear heads (dropped afterwards): the patch holding an object's centre predicts its type,
   colour, place and side; the other patches predict "no object".
2. **Grounded question answering** (``steps``): the whole model, on a mix of questions
   (:data:`QUESTIONS`) about scenes with 1 to 5 objects, the dense loss kept with weight
   ``aux_weight``. Prompts use the paper's LLaMA-2 chat rendering, with the system prompt in a
   share ``system_prompt_share`` of them.

The instruct stage (``configs/synthego/instruct.yaml``) then fine-tunes it to answer the LEGO
query with an action description, as the paper fine-tunes LLaVA.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from tqdm.auto import tqdm

from lego.metrics.description_accuracy import parse_description
from lego.models.instruct.bootstrap import write_synthego_vlm
from lego.models.instruct.network import (
    LLAVA_SYSTEM_PROMPT,
    PromptTemplate,
    build_training_inputs,
    generate_with_embeddings,
    load_vlm,
)
from lego.synthego import world
from lego.zoo.card import machine, write_card
from lego.zoo.checkpoint import load_state, partial_dir, save_state
from lego.zoo.scenes import ObjectFact, ScenePool, caption, render_pool

#: Question kinds and their weights in the pretraining mix.
QUESTIONS: dict[str, float] = {"about": 3.0, "hand": 1.0, "colour": 1.0, "place": 1.0,
                               "describe": 1.0}

#: The chat rendering without the system prompt (LLaMA-2's ``[INST] ... [/INST]``).
SHORT_CONVERSATION = "[INST] <image>\n{question} [/INST]"


def question_answer(kind: str, objects: tuple[ObjectFact, ...], target: int) -> tuple[str, str]:
    """A pretraining question about object ``target`` of a scene, and its answer.

    Args:
        kind: ``about`` (colour, place and hand), ``hand``, ``colour``, ``place`` or
            ``describe`` (every object, in reading order).
        objects: The scene's objects.
        target: Index of the object asked about.

    Returns:
        ``(question, answer)``.

    Raises:
        ValueError: For an unknown kind.
    """
    o = objects[target]
    if kind == "about":
        return (f"Tell me about the {o.kind}.",
                f"The {o.colour} {o.kind} is at the {o.place} of the table, near the {o.hand} "
                "hand.")
    if kind == "hand":
        return f"Which hand is nearer to the {o.kind}?", f"The {o.hand} hand."
    if kind == "colour":
        return f"What colour is the {o.kind}?", f"It is {o.colour}."
    if kind == "place":
        return f"Where is the {o.kind}?", f"It is at the {o.place} of the table."
    if kind == "describe":
        return "Describe the table.", caption(objects)[0].upper() + caption(objects)[1:]
    raise ValueError(f"unknown question kind {kind!r}")


@dataclass
class VLMRecipe:
    """How the VLM is pretrained (the defaults make the shipped model).

    Attributes:
        seed: Seed of the scenes, the initial weights and the training draws.
        scenes: Crowded pretraining scenes (3-5 objects, ``zoo-<seed>``).
        easy_scenes: Extra scenes keeping 1 to ``max_easy_objects`` objects (a curriculum mix).
        max_easy_objects: Most objects of an easy scene.
        vision_steps: Steps of phase 1 (vision tower only).
        vision_batch_size: Images per phase-1 step.
        steps: Steps of phase 2 (grounded question answering).
        batch_size: Questions per phase-2 step.
        learning_rate: AdamW learning rate of both phases (constant after warm-up).
        warmup_steps: Linear warm-up steps of each phase.
        aux_weight: Weight of the dense vision loss in phase 2.
        system_prompt_share: Share of phase-2 prompts rendered with the system prompt.
        image_size: Vision input side.
        patch_size: Vision patch side (``(image_size / patch_size) ** 2`` image tokens).
        vision_hidden: CLIP vision width.
        vision_layers: CLIP vision layers.
        text_hidden: Llama width (the embedding width ``D`` of the feature cache).
        text_layers: Llama layers.
        heads: Attention heads of both towers.
        eval_scenes: Held-out crowded scenes (``zooval-<seed>``) to score grounding.
    """

    seed: int = 0
    scenes: int = 6000
    easy_scenes: int = 10000
    max_easy_objects: int = 5
    vision_steps: int = 400
    vision_batch_size: int = 64
    steps: int = 8000
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    aux_weight: float = 0.5
    system_prompt_share: float = 0.25
    image_size: int = 64
    patch_size: int = 16
    vision_hidden: int = 128
    vision_layers: int = 3
    text_hidden: int = 128
    text_layers: int = 3
    heads: int = 4
    eval_scenes: int = 256


class DenseHeads(nn.Module):
    """Linear heads reading type, colour, place and side from each patch's vision features."""

    SIZES = (len(world.OBJECT_TYPES), len(world.COLOURS), len(world.PLACES), 2)

    def __init__(self, width: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(width, n + 1) for n in self.SIZES)

    def forward(self, features: Tensor, labels: Tensor) -> tuple[Tensor, list[float]]:
        """Cross-entropy of every head (``labels``: ``B x P x 4``, 0 = no object).

        Returns:
            The summed loss and each head's accuracy on object patches.
        """
        loss = features.new_zeros(())
        accuracy = []
        for k, head in enumerate(self.heads):
            logits = head(features)
            target = labels[..., k]
            loss = loss + F.cross_entropy(logits.flatten(0, 1), target.flatten())
            hit = (logits.argmax(-1) == target)[target > 0]
            accuracy.append(float(hit.float().mean()) if hit.numel() else 0.0)
        return loss, accuracy


def patch_labels(objects: tuple[ObjectFact, ...], image_size: int, patch_size: int) -> Tensor:
    """Per-patch labels (type, colour, place, side; 0 = none) of the patches of object centres."""
    grid = image_size // patch_size
    labels = torch.zeros(grid * grid, 4, dtype=torch.long)
    types, colours, places = list(world.OBJECT_TYPES), list(world.COLOURS), list(world.PLACES)
    for o in objects:
        x0, y0, x1, y1 = o.box
        cx = min(grid - 1, max(0, int((x0 + x1) / 2) // patch_size))
        cy = min(grid - 1, max(0, int((y0 + y1) / 2) // patch_size))
        labels[cy * grid + cx] = torch.tensor([
            1 + types.index(o.kind), 1 + colours.index(o.colour), 1 + places.index(o.place),
            1 + (o.hand == "right"),
        ])
    return labels


def vision_features(model: nn.Module, pixel_values: Tensor) -> Tensor:
    """The projector's input: the vision layer LLaVA selects, without the class token."""
    config = model.config
    out = model.model.vision_tower(pixel_values, output_hidden_states=True)
    features = out.hidden_states[config.vision_feature_layer]
    return features[:, 1:] if config.vision_feature_select_strategy == "default" else features


def grounding_scores(
    model: nn.Module, processor: Any, pool: ScenePool, seed: int, batch_size: int = 64,
) -> dict[str, float]:
    """Ask about one object of each held-out scene; percent right of colour, place, hand, all.

    The question is ``Tell me about the <object>.`` (with the system prompt), answered greedily.
    """
    rng = random.Random(seed)
    template = PromptTemplate()
    hits = {"colour": 0, "place": 0, "hand": 0, "all": 0}
    model.eval()
    for start in range(0, len(pool), batch_size):
        facts = pool.objects[start : start + batch_size]
        targets = [rng.randrange(len(f)) for f in facts]
        prompts = [template.render(question_answer("about", f, t)[0], processor)
                   for f, t in zip(facts, targets, strict=True)]
        images = [_image(pool, start + i) for i in range(len(facts))]
        texts = generate_with_embeddings(model, processor, images, prompts, [0] * len(facts),
                                         temperature=0.0, max_new_tokens=32).texts
        for text, f, t in zip(texts, facts, targets, strict=True):
            parsed, truth = parse_description(text), f[t]
            row = {"colour": parsed.colour == truth.colour and parsed.object == truth.kind,
                   "place": parsed.place == truth.place, "hand": parsed.hand == truth.hand}
            row["all"] = all(row.values())
            for key, value in row.items():
                hits[key] += value
    return {k: 100.0 * v / max(1, len(pool)) for k, v in hits.items()}


def _image(pool: ScenePool, index: int) -> Any:
    from PIL import Image

    return Image.fromarray(pool.frames[index].permute(1, 2, 0).numpy())


def train_vlm(
    out_dir: Path,
    recipe: VLMRecipe | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    command: str = "python -m lego backbones --only vlm",
    eval_every: int = 0,
    checkpoint_every: int = 500,
) -> dict[str, float]:
    """Pretrain the SynthEgo VLM and save it (transformers layout), scored, with its card.

    Args:
        out_dir: The model folder to write (``pretrained/synthego-vlm``).
        recipe: Training settings (default: the shipped model's).
        progress: Show progress bars.
        log: Where progress lines go.
        command: The command recorded on the card.
        eval_every: Also score grounding every this many phase-2 steps (0: at the end only).
        checkpoint_every: Save the training state every this many phase-2 steps (0: never); a
            build started again with the same recipe resumes from it.

    Returns:
        Grounding scores on held-out crowded scenes (percent).
    """
    recipe = recipe or VLMRecipe()
    out_dir = Path(out_dir)
    started = time.perf_counter()
    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    init = partial_dir(out_dir) / "init"
    write_synthego_vlm(
        init, image_size=recipe.image_size, patch_size=recipe.patch_size,
        vision_hidden=recipe.vision_hidden, vision_layers=recipe.vision_layers,
        text_hidden=recipe.text_hidden, text_layers=recipe.text_layers, heads=recipe.heads,
        seed=recipe.seed, extra_texts=[SHORT_CONVERSATION, *_question_texts()],
    )
    model, processor = load_vlm(init)
    crowded = render_pool(recipe.seed, recipe.scenes, size=recipe.image_size, progress=progress)
    easy = render_pool(recipe.seed, recipe.easy_scenes, part="zooeasy", size=recipe.image_size,
                       max_objects=recipe.max_easy_objects, progress=progress)
    held_out = render_pool(recipe.seed, recipe.eval_scenes, part="zooval",
                           size=recipe.image_size, progress=progress)
    pools = [crowded, easy]
    labels = [torch.stack([patch_labels(o, recipe.image_size, recipe.patch_size)
                           for o in p.objects]) for p in pools]
    heads = DenseHeads(recipe.vision_hidden)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad] + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=0.0)

    def draw(count: int) -> list[tuple[int, int]]:
        total = len(crowded) + len(easy)
        out = []
        for _ in range(count):
            i = rng.randrange(total)
            out.append((0, i) if i < len(crowded) else (1, i - len(crowded)))
        return out

    def set_lr(step: int) -> None:
        for group in optimizer.param_groups:
            group["lr"] = recipe.learning_rate * min(1.0, step / max(1, recipe.warmup_steps))

    def pixels(items: list[tuple[int, int]]) -> Tensor:
        images = [_image(pools[k], i) for k, i in items]
        return processor.image_processor(images, return_tensors="pt")["pixel_values"]

    def pretrain_vision(steps: int) -> dict[str, float]:
        accuracy = [0.0] * len(DenseHeads.SIZES)
        bar = tqdm(range(1, steps + 1), desc="VLM vision tower", disable=not progress)
        for step in bar:
            items = draw(recipe.vision_batch_size)
            target = torch.stack([labels[k][i] for k, i in items])
            loss, accuracy = heads(vision_features(model, pixels(items)), target)
            set_lr(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", type=f"{accuracy[0]:.2f}")
        return dict(zip(("type", "colour", "place", "side"), accuracy, strict=True))

    parts = {"model": model, "heads": heads, "optimizer": optimizer}
    history: list[dict[str, Any]] = []
    losses: list[float] = []
    start = 1
    resumed = load_state(out_dir, asdict(recipe), parts, rng)
    if resumed is not None:
        start = resumed[0] + 1
        extra = resumed[1]
        losses, history, vision = list(extra["losses"]), list(extra["history"]), extra["vision"]
        started -= float(extra["seconds"])  # the card counts the earlier sessions' time
        log(f"VLM: resuming grounding at step {start} from {partial_dir(out_dir)}")
    else:
        torch.manual_seed(recipe.seed)  # loading may draw from the global generator once a process
        vision = pretrain_vision(recipe.vision_steps)
    log("VLM vision tower: patch accuracy " + ", ".join(f"{k} {100 * v:.0f} %"
                                                         for k, v in vision.items()))
    template_full = PromptTemplate()
    template_short = PromptTemplate(conversation=SHORT_CONVERSATION)
    kinds, weights = list(QUESTIONS), list(QUESTIONS.values())
    every = max(1, recipe.steps // 10)
    bar = tqdm(range(start, recipe.steps + 1), desc="VLM grounding", disable=not progress,
               initial=start - 1, total=recipe.steps)
    for step in bar:
        items = draw(recipe.batch_size)
        prompts, answers, images = [], [], []
        for k, i in items:
            facts = pools[k].objects[i]
            question, answer = question_answer(
                rng.choices(kinds, weights)[0], facts, rng.randrange(len(facts)))
            template = (template_full if rng.random() < recipe.system_prompt_share
                        else template_short)
            prompts.append(template.render(question, processor))
            answers.append(answer)
            images.append(_image(pools[k], i))
        inputs = build_training_inputs(processor, images, prompts, answers,
                                       [f"scene {k}/{i}" for k, i in items], 4096)
        out = model(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask,
                    pixel_values=inputs.pixel_values, labels=inputs.labels)
        loss = out.loss
        if recipe.aux_weight > 0:
            target = torch.stack([labels[k][i] for k, i in items])
            dense, _ = heads(vision_features(model, inputs.pixel_values), target)
            loss = loss + recipe.aux_weight * dense
        set_lr(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(out.loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if eval_every and step % eval_every == 0:
            scores = grounding_scores(model, processor, held_out, recipe.seed)
            model.train()
            history.append({"step": step, **scores})
            log(f"VLM step {step}: " + ", ".join(f"{k} {v:.1f} %" for k, v in scores.items()))
        elif step % every == 0 or step == recipe.steps:
            log(f"VLM grounding step {step}/{recipe.steps}: loss {np.mean(losses[-every:]):.4f}, "
                f"{time.perf_counter() - started:.0f} s")
        if checkpoint_every and step % checkpoint_every == 0 and step < recipe.steps:
            save_state(out_dir, step, asdict(recipe), parts, rng, {
                "losses": losses, "history": history, "vision": vision,
                "seconds": time.perf_counter() - started})
    train_seconds = time.perf_counter() - started
    model.eval()
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    shutil.rmtree(partial_dir(out_dir), ignore_errors=True)
    model, processor = load_vlm(out_dir)  # score what was saved
    scores = grounding_scores(model, processor, held_out, recipe.seed)
    log("VLM grounding on held-out scenes: " + ", ".join(f"{k} {v:.1f} %"
                                                         for k, v in scores.items()))
    write_card(
        out_dir,
        title="SynthEgo VLM (the miniature's LLaVA)",
        summary=(
            "A `LlavaForConditionalGeneration` (CLIP vision tower, linear projector like the "
            "paper's LLaVA, Llama language model over the SynthEgo word tokenizer) pretrained on "
            "SynthEgo table tops to answer questions about one object of a crowded scene: its "
            "colour, its place and the hand on its side. The LEGO instruct stage fine-tunes it "
            "to describe actions."
        ),
        library="transformers",
        usage=(
            "from transformers import AutoProcessor, LlavaForConditionalGeneration\n"
            f"model = LlavaForConditionalGeneration.from_pretrained('{out_dir}')\n"
            f"processor = AutoProcessor.from_pretrained('{out_dir}')"
        ),
        command=command,
        settings=asdict(recipe),
        training={
            "training scenes": f"{recipe.scenes} crowded + {recipe.easy_scenes} with 1 to "
                               f"{recipe.max_easy_objects} objects (splits zoo-{recipe.seed}, "
                               f"zooeasy-{recipe.seed}; never a demo scene)",
            "steps": f"{recipe.vision_steps} vision + {recipe.steps} grounding",
            "final loss (answer tokens, mean of the last tenth)":
                round(float(np.mean(losses[-every:])), 4) if losses else None,
            "vision patch accuracy": ", ".join(f"{k} {100 * v:.0f} %" for k, v in vision.items()),
            "training time": f"{train_seconds:.0f} s",
            "machine": ", ".join(f"{k} {v}" for k, v in machine().items() if v is not None),
            "parameters": sum(p.numel() for p in model.parameters()),
            "image tokens": (recipe.image_size // recipe.patch_size) ** 2,
        },
        scores={f"{k} right": f"{v:.1f} %" for k, v in scores.items()},
        notes=(
            f"Scored on {recipe.eval_scenes} held-out scenes with 3 to 5 objects (`zooval`): "
            "*Tell me about the <object>.* with the paper's system prompt, greedy decoding; "
            "`all` is colour, place and hand right together. Chance is about 25 % for colour, "
            "17 % for place and 50 % for the hand."
            + (" Grounding during training: " + "; ".join(
                f"step {h['step']}: all {h['all']:.1f} %" for h in history) if history else "")
        ),
    )
    return scores


def _question_texts() -> list[str]:
    """Every wording of the pretraining questions and answers (for the tokenizer)."""
    fact = ObjectFact("cup", "red", "upper left", "left", (0, 0, 1, 1))
    return [text for kind in QUESTIONS for text in question_answer(kind, (fact,), 0)] + [
        LLAVA_SYSTEM_PROMPT]
