import json

import pytest
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline

from lego.interop import LegoPipeline, export_pipeline
from lego.models.editing import InstructPix2PixModule, LegoDiffusionModule
from lego.models.editing.bootstrap import write_diffusion_backbone
from lego.models.editing.guidance import sample_generators
from lego.synthego import vocabulary
from tests.models.editing.editing_helpers import make_batch


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    kl = tmp_path_factory.mktemp("kl")
    unshuffle = tmp_path_factory.mktemp("unshuffle")
    write_diffusion_backbone(kl, vocabulary(), resolution=32, hidden_size=32, autoencoder="kl")
    write_diffusion_backbone(unshuffle, vocabulary(), resolution=32, hidden_size=32)
    return {"kl": kl, "unshuffle": unshuffle}


def trained(cls, pretrained, **kwargs):
    """A module whose EMA differs from its live weights (so export must pick the EMA)."""
    torch.manual_seed(0)
    module = cls(
        pretrained=str(pretrained),
        sampler="EulerAncestralDiscreteScheduler",
        num_inference_steps=3,
        ema_decay=0.5,
        seed=3,
        **kwargs,
    )
    module.configure_model()
    with torch.no_grad():
        for p in module.ema_parameters():
            p.add_(0.01 * torch.randn_like(p))
    module.ema.step(module.ema_parameters())
    with torch.no_grad():
        module.unet.conv_in.bias.add_(1.0)  # live weights move on; the EMA does not
        if getattr(module, "vlm_conditioner", None) is not None:
            for p in module.vlm_conditioner.parameters():
                p.add_(1.0)
    return module.eval()


def generate_with_ema(module, batch):
    module.on_test_epoch_start()
    try:
        return module.generate(batch).clamp(0, 1)  # pipelines clamp, as the test step does
    finally:
        module.on_test_epoch_end()


@pytest.mark.parametrize("kind", ["kl", "unshuffle"])
def test_ip2p_export_loads_in_stock_diffusers(backbones, tmp_path, kind):
    module = trained(InstructPix2PixModule, backbones[kind])
    batch = make_batch(2)
    ours = generate_with_ema(module, batch)
    out = export_pipeline(module, tmp_path / "ip2p")
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionInstructPix2PixPipeline"
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(out, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        prompt=list(batch.texts),
        image=(batch.input_frames + 1) / 2,
        num_inference_steps=3,
        generator=sample_generators(batch.sample_ids, module.seed),
        output_type="pt",
    ).images
    torch.testing.assert_close(images, ours, atol=1e-4, rtol=0)


def test_lego_pipeline_round_trips(backbones, tmp_path):
    module = trained(LegoDiffusionModule, backbones["unshuffle"], vlm_dim=16)
    batch = make_batch(2, dim=16)
    ours = generate_with_ema(module, batch)
    out = export_pipeline(module, tmp_path / "lego")
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "LegoPipeline"
    assert index["vlm_conditioner"] == ["lego.models.editing.conditioning", "VLMConditioner"]
    pipe = LegoPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)

    def run(p):
        return p(
            image=(batch.input_frames + 1) / 2,
            prompt=list(batch.texts),
            vlm_image=batch.vlm_image,
            vlm_text=batch.vlm_text,
            vlm_text_mask=batch.vlm_text_mask,
            num_inference_steps=3,
            generator=sample_generators(batch.sample_ids, module.seed),
            output_type="pt",
        ).images

    first = run(pipe)
    torch.testing.assert_close(first, ours, atol=1e-4, rtol=0)
    pipe.save_pretrained(tmp_path / "again")
    second = run(LegoPipeline.from_pretrained(tmp_path / "again"))
    assert torch.equal(first, second)


def test_export_needs_a_built_module(tmp_path, backbones):
    module = InstructPix2PixModule(pretrained=str(backbones["kl"]))
    with pytest.raises(RuntimeError, match="configure_model"):
        export_pipeline(module, tmp_path)
