"""Every Hugging Face hub id the project names, in one place.

Code takes its defaults from here; the real configs (``configs/ego4d``, ``configs/epic_kitchens``)
spell the same ids, and a test checks that every id a config names is one of :data:`HUB_IDS`.
When a repository moves (SD 1.5's original ``runwayml`` repository was removed in 2024), this
file and the configs change, nothing else.
"""

from __future__ import annotations

#: Stable Diffusion 1.5, the initialisation of LEGO and the paper's IP2P row (the maintained
#: mirror of the removed ``runwayml/stable-diffusion-v1-5``).
STABLE_DIFFUSION_15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
#: The released InstructPix2Pix model (an IP2P variant starts from it).
INSTRUCT_PIX2PIX = "timbrooks/instruct-pix2pix"
#: A transformers-format LLaVA (LLaVA-1.5 7B) for instruction tuning.
LLAVA_15_7B = "llava-hf/llava-1.5-7b-hf"
#: The paper's VLM, in the original LLaVA format.
LLAVA_LLAMA2_13B = "liuhaotian/llava-llama-2-13b-chat-lightning-preview"
#: The evaluation weights released with the paper (EgoVLP, EgoVLP+, BLIP originals).
LEGO_METRICS = "bolinlai/LEGO-Metrics"
#: CLIP ViT-L/14 (the CLIP image-image metric).
CLIP_VIT_L14 = "openai/clip-vit-large-patch14"
#: The DistilBERT tokenizer of EgoVLP's text branch.
DISTILBERT = "distilbert-base-uncased"
#: The BLIP captioners in transformers layout.
BLIP_BASE = "Salesforce/blip-image-captioning-base"
BLIP_LARGE = "Salesforce/blip-image-captioning-large"

#: Where the README's recipe writes the paper's VLM (``LLAVA_LLAMA2_13B``, original LLaVA
#: format) as a transformers folder: ``python -m lego import-weights llava``.
LLAVA_LLAMA2_13B_IMPORTED = "checkpoints/llava-llama-2-13b-chat"
#: Embedding width D and image tokens of the VLMs the real configs name (the LEGO stage's
#: ``vlm_dim`` and the feature cache's ``image_tokens``).
VLM_DIMS: dict[str, tuple[int, int]] = {
    LLAVA_LLAMA2_13B: (5120, 256), LLAVA_LLAMA2_13B_IMPORTED: (5120, 256),
    LLAVA_15_7B: (4096, 576),
}

#: All of the above.
HUB_IDS: frozenset[str] = frozenset({
    STABLE_DIFFUSION_15, INSTRUCT_PIX2PIX, LLAVA_15_7B, LLAVA_LLAMA2_13B, LEGO_METRICS,
    CLIP_VIT_L14, DISTILBERT, BLIP_BASE, BLIP_LARGE,
})
