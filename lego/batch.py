"""Typed samples, batches and step outputs: the data contract between every stage of `lego`.

Data flows one way: a DataModule yields :class:`EgoBatch` objects, a LightningModule turns them
into outputs such as :class:`GeneratedFrames`, and callbacks (writers, metrics) consume those.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image
from torch import Tensor


@dataclass
class EgoSample:
    """One (input frame, action) record of an EgoGen-format dataset.

    Attributes:
        sample_id: ``"<clip_id>/<action_id>"``, unique within a split.
        clip_id: The clip (video) id, the first key of the records JSON.
        action_id: The action id, the second key of the records JSON.
        image_0: Relative path of the input frame inside the split folder.
        image_1: Relative path of the target action frame (``None`` when unknown).
        input_frame: Input frame, ``3 x H x W`` float in [-1, 1].
        target_frame: Target action frame, ``3 x H x W`` in [-1, 1], or ``None`` at inference.
        action: The action label after dataset-specific cleaning (e.g. ``"pick up the knife"``).
        raw_action: The action label exactly as stored in the records file.
        text: The prompt the generator is conditioned on, chosen by the DataModule's
            ``text_source`` (the action label or the enriched description).
        description: Enriched description of the action, if the records carry one.
        curated: Curated (GPT / ground-truth) description for VLM tuning, if known.
        question: The human turn of the curated conversation, if known.
        vlm_image: VLM image embedding, ``N_img x D``, if a feature cache is configured.
        vlm_text: VLM text embedding, ``77 x D``, if a feature cache is configured.
        vlm_text_mask: Boolean mask (``77``) of the valid rows of ``vlm_text``.
        input_path: Absolute path of the input frame on disk.
        input_image: The input frame as stored (RGB, full size), when the DataModule was asked
            for it (``input_images``): what a VLM's processor resizes itself.
    """

    sample_id: str
    clip_id: str
    action_id: str
    image_0: str
    image_1: str | None
    input_frame: Tensor
    target_frame: Tensor | None
    action: str
    raw_action: str
    text: str
    description: str | None = None
    curated: str | None = None
    question: str | None = None
    vlm_image: Tensor | None = None
    vlm_text: Tensor | None = None
    vlm_text_mask: Tensor | None = None
    input_path: str = ""
    input_image: Image.Image | None = None


def _stack_optional(values: list[Tensor | None], name: str) -> Tensor | None:
    present = [v is not None for v in values]
    if not any(present):
        return None
    if not all(present):
        raise ValueError(f"Some samples of the batch have {name!r} and some do not.")
    return torch.stack(values)  # type: ignore[arg-type]


def _list_optional(values: list[Image.Image | None], name: str) -> list[Image.Image] | None:
    present = [v is not None for v in values]
    if not any(present):
        return None
    if not all(present):
        raise ValueError(f"Some samples of the batch have {name!r} and some do not.")
    return list(values)  # type: ignore[arg-type]


@dataclass
class EgoBatch:
    """A collated batch of :class:`EgoSample` objects.

    Tensors are stacked along a new first dimension; strings become lists. Optional fields are
    ``None`` when no sample carries them.
    """

    sample_ids: list[str]
    clip_ids: list[str]
    action_ids: list[str]
    image_0: list[str]
    image_1: list[str | None]
    input_frames: Tensor
    target_frames: Tensor | None
    actions: list[str]
    raw_actions: list[str]
    texts: list[str]
    descriptions: list[str | None] = field(default_factory=list)
    curated: list[str | None] = field(default_factory=list)
    questions: list[str | None] = field(default_factory=list)
    vlm_image: Tensor | None = None
    vlm_text: Tensor | None = None
    vlm_text_mask: Tensor | None = None
    input_paths: list[str] = field(default_factory=list)
    input_images: list[Image.Image] | None = None

    def __len__(self) -> int:
        return len(self.sample_ids)

    @classmethod
    def collate(cls, samples: list[EgoSample]) -> EgoBatch:
        """Collate samples into a batch (usable as a DataLoader ``collate_fn``).

        Args:
            samples: The samples, all of the same resolution.

        Returns:
            The batch.

        Raises:
            ValueError: If the list is empty or an optional tensor is present on some samples only.
        """
        if not samples:
            raise ValueError("Cannot collate an empty list of samples.")
        return cls(
            sample_ids=[s.sample_id for s in samples],
            clip_ids=[s.clip_id for s in samples],
            action_ids=[s.action_id for s in samples],
            image_0=[s.image_0 for s in samples],
            image_1=[s.image_1 for s in samples],
            input_frames=torch.stack([s.input_frame for s in samples]),
            target_frames=_stack_optional([s.target_frame for s in samples], "target_frame"),
            actions=[s.action for s in samples],
            raw_actions=[s.raw_action for s in samples],
            texts=[s.text for s in samples],
            descriptions=[s.description for s in samples],
            curated=[s.curated for s in samples],
            questions=[s.question for s in samples],
            vlm_image=_stack_optional([s.vlm_image for s in samples], "vlm_image"),
            vlm_text=_stack_optional([s.vlm_text for s in samples], "vlm_text"),
            vlm_text_mask=_stack_optional([s.vlm_text_mask for s in samples], "vlm_text_mask"),
            input_paths=[s.input_path for s in samples],
            input_images=_list_optional([s.input_image for s in samples], "input_image"),
        )


@dataclass
class GeneratedFrames:
    """What every action frame generator returns from ``test_step`` / ``predict_step``.

    Attributes:
        sample_ids: ``"<clip_id>/<action_id>"`` of each frame.
        frames: Generated action frames, ``B x 3 x H x W`` float in [0, 1].
        image_1: Relative path of each target frame (names the output file), or ``None``.
        image_0: Relative path of each input frame.
        texts: The prompt each frame was generated from.
        input_frames: The input frames in [0, 1] (for grids and context metrics), if kept.
        target_frames: The ground-truth action frames in [0, 1], if known.
        raw_frames: The generator's output before clamping, on the same scale as ``frames``
            (``(x + 1) / 2`` of the decoder output, which may leave [0, 1]), if it has one. The
            ``official`` protocol min-max stretches these, as the paper's inference does; every
            other consumer uses ``frames``.
    """

    sample_ids: list[str]
    frames: Tensor
    image_1: list[str | None]
    image_0: list[str]
    texts: list[str]
    input_frames: Tensor | None = None
    target_frames: Tensor | None = None
    raw_frames: Tensor | None = None

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[1] != 3:
            raise ValueError(f"frames must be B x 3 x H x W, got {tuple(self.frames.shape)}")
        if self.frames.shape[0] != len(self.sample_ids):
            raise ValueError(
                f"{self.frames.shape[0]} frames for {len(self.sample_ids)} sample ids"
            )
        if self.raw_frames is not None and self.raw_frames.shape != self.frames.shape:
            raise ValueError(
                f"raw_frames {tuple(self.raw_frames.shape)} do not match frames "
                f"{tuple(self.frames.shape)}"
            )

    def unclamped(self, i: int) -> Tensor:
        """Frame ``i`` before clamping (the raw output when kept, else the clamped frame)."""
        return (self.raw_frames if self.raw_frames is not None else self.frames)[i]


@dataclass
class GeneratedDescriptions:
    """Descriptions a VLM generated for samples (the instruct stage's validation output).

    Attributes:
        sample_ids: ``"<clip_id>/<action_id>"`` of each description.
        descriptions: The generated text, one per sample.
    """

    sample_ids: list[str]
    descriptions: list[str]

    def __post_init__(self) -> None:
        if len(self.sample_ids) != len(self.descriptions):
            raise ValueError(
                f"{len(self.descriptions)} descriptions for {len(self.sample_ids)} sample ids"
            )
