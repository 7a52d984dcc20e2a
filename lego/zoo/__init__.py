"""The SynthEgo model zoo: builders of the pretrained miniature backbones the project ships.

``text_to_image`` trains the miniature's Stable Diffusion 1.5 and ``vlm`` its LLaVA, on
pretraining scenes of their own (``scenes``); ``card`` writes what each was trained on and scores
beside its weights. ``python -m lego backbones`` (``make backbones``) runs them.
"""

from lego.zoo.text_to_image import TextToImageRecipe, train_text_to_image
from lego.zoo.vlm import VLMRecipe, train_vlm

__all__: list[str] = ["TextToImageRecipe", "VLMRecipe", "train_text_to_image", "train_vlm"]
