import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionImg2ImgPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTokenizer

from lego.models.editing import SDEditModule
from tests.models.editing.editing_helpers import make_batch


def sdedit(backbone, **kwargs):
    options = {"num_inference_steps": 10, "guidance_scale": 3.0, "seed": 3, **kwargs}
    module = SDEditModule(pretrained=str(backbone), **options)
    module.configure_model()
    return module.eval()


def input_latents(module, batch):
    """The input frames' scaled latents (what SDEdit at strength 0 would return)."""
    dist = module.vae.encode(batch.input_frames).latent_dist
    return dist.mode() * module.vae.config.scaling_factor


def output_latents(module, batch):
    return module.pipeline()(**module.pipeline_kwargs(batch)).images


@pytest.mark.parametrize("backbone", ["kl_backbone", "synthego_backbone"])
def test_distance_to_the_input_grows_with_strength(backbone, request):
    root = request.getfixturevalue(backbone)
    batch = make_batch(4, size=32)
    distances = []
    for strength in (0.1, 0.5, 0.9):
        module = sdedit(root, strength=strength)
        assert module.generate(batch).shape == (4, 3, 32, 32)
        start = input_latents(module, batch)
        distances.append(((output_latents(module, batch) - start).norm() / start.norm()).item())
    # Measured (relative L2 distance in latent space, random UNets): kl 2.8 / 21 / 107 (its
    # latents are small and img2img samples them), pixel-unshuffle 0.018 / 0.77 / 3.9.
    assert distances[0] < distances[1] < distances[2]
    if backbone == "synthego_backbone":  # deterministic autoencoder: strength 0.1 stays put
        assert distances[0] < 0.05


def test_strength_one_ignores_the_input(kl_backbone):
    module = sdedit(kl_backbone, strength=1.0)
    first = make_batch(3, size=32, seed=0)
    second = make_batch(3, size=32, seed=1)  # same sample ids and prompts, other frames
    assert not torch.equal(first.input_frames, second.input_frames)
    torch.testing.assert_close(module.generate(first), module.generate(second))
    partial = sdedit(kl_backbone, strength=0.9)
    assert not torch.allclose(partial.generate(first), partial.generate(second))


def test_equals_the_stock_img2img_pipeline(kl_backbone):
    module = sdedit(kl_backbone, strength=0.6)
    batch = make_batch(2, size=32)
    ours = module.generate(batch)
    root = str(kl_backbone)  # a components folder: load each part with the stock classes
    stock = StableDiffusionImg2ImgPipeline(
        vae=AutoencoderKL.from_pretrained(root, subfolder="vae"),
        text_encoder=CLIPTextModel.from_pretrained(root, subfolder="text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(root, subfolder="tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(root, subfolder="unet"),
        scheduler=DDIMScheduler.from_pretrained(
            root, subfolder="scheduler", timestep_spacing="linspace"
        ),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    stock.set_progress_bar_config(disable=True)
    expected = stock(
        prompt=list(batch.texts), image=(batch.input_frames + 1) / 2, strength=0.6,
        num_inference_steps=10, guidance_scale=3.0, generator=module.generators(batch),
        output_type="pt",
    ).images
    torch.testing.assert_close(ours.clamp(0, 1), expected, atol=1e-5, rtol=1e-4)


def test_a_sample_does_not_depend_on_its_batch(kl_backbone):
    module = sdedit(kl_backbone, strength=0.7)
    batch = make_batch(3, size=32)
    alone = module.generate(make_batch(1, size=32, start=0))
    torch.testing.assert_close(module.generate(batch)[:1], alone, atol=1e-5, rtol=1e-4)


def test_bad_settings_and_image_conditioned_checkpoints_are_refused(kl_backbone, tmp_path):
    with pytest.raises(ValueError, match="strength must be in"):
        SDEditModule(pretrained=str(kl_backbone), strength=0.0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        SDEditModule(pretrained=str(kl_backbone), num_inference_steps=0)
    with pytest.raises(ValueError, match="runs no step"):
        SDEditModule(pretrained=str(kl_backbone), num_inference_steps=3, strength=0.3)
