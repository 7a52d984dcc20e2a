"""A deterministic stand-in for the VLM feature cache (per-sample random embeddings)."""

from __future__ import annotations

import hashlib

import torch


class RandomFeatureReader:
    """Returns fixed pseudo-random VLM embeddings for each sample (the FeatureReader protocol)."""

    def __init__(self, dim: int, image_tokens: int = 4, text_tokens: int = 77) -> None:
        self.dim = dim
        self.image_tokens = image_tokens
        self.text_tokens = text_tokens

    def read(self, sample_id: str, image_0: str) -> dict[str, torch.Tensor]:
        seed = int.from_bytes(hashlib.sha1(sample_id.encode()).digest()[:4], "little")
        g = torch.Generator().manual_seed(seed)
        valid = 5 + seed % 20
        text = torch.randn(self.text_tokens, self.dim, generator=g)
        text[valid:] = 0
        mask = torch.zeros(self.text_tokens, dtype=torch.bool)
        mask[:valid] = True
        return {
            "vlm_image": torch.randn(self.image_tokens, self.dim, generator=g),
            "vlm_text": text,
            "vlm_text_mask": mask,
        }


def make_batch(n: int, size: int = 32, dim: int | None = None, seed: int = 0, start: int = 0):
    """A batch of ``n`` random samples (ids ``clip<i>/act<i>``), with VLM features if ``dim``."""
    from lego.batch import EgoBatch, EgoSample

    g = torch.Generator().manual_seed(seed)
    reader = RandomFeatureReader(dim) if dim else None
    words = ["pick up the red cup", "push the blue box", "open the green box", "cut the bread"]
    samples = []
    for i in range(start, start + n):
        sid = f"clip{i}/act{i}"
        sample = EgoSample(
            sample_id=sid,
            clip_id=f"clip{i}",
            action_id=f"act{i}",
            image_0=f"{sid}/frame_0.jpg",
            image_1=f"{sid}/frame_1.jpg",
            input_frame=torch.rand(3, size, size, generator=g) * 2 - 1,
            target_frame=torch.rand(3, size, size, generator=g) * 2 - 1,
            action=words[i % len(words)],
            raw_action="#C C " + words[i % len(words)],
            text=words[i % len(words)],
        )
        if reader is not None:
            for key, value in reader.read(sid, sample.image_0).items():
                setattr(sample, key, value)
        samples.append(sample)
    return EgoBatch.collate(samples)
