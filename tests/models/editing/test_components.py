import json

import pytest
import torch
from diffusers import UNet2DConditionModel

from lego.models.editing import PixelUnshuffleAutoencoder
from lego.models.editing.components import (
    ComponentLoadError,
    check_sampler,
    grow_conv_in,
    load_autoencoder,
    load_components,
    load_image_conditioned_unet,
    load_text_to_image_unet,
    make_sampling_scheduler,
)


def tiny_unet(in_channels=4, cross=32):
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross,
        attention_head_dim=8,
    )


def test_grow_conv_in_keeps_weights_and_bias_and_zeroes_new_channels():
    unet = tiny_unet()
    old_w = unet.conv_in.weight.detach().clone()
    old_b = unet.conv_in.bias.detach().clone()
    x = torch.randn(2, 4, 8, 8)
    ctx = torch.randn(2, 5, 32)
    before = unet(x, 10, encoder_hidden_states=ctx).sample
    grow_conv_in(unet, 8)
    assert unet.conv_in.in_channels == 8 and unet.config.in_channels == 8
    assert torch.equal(unet.conv_in.weight[:, :4], old_w)
    assert torch.equal(unet.conv_in.bias, old_b)
    assert torch.count_nonzero(unet.conv_in.weight[:, 4:]) == 0
    # With zero new channels the widened UNet computes what the original did, whatever they hold.
    after = unet(torch.cat([x, torch.randn(2, 4, 8, 8)], 1), 10, encoder_hidden_states=ctx).sample
    torch.testing.assert_close(after, before)
    with pytest.raises(ValueError, match="cannot shrink"):
        grow_conv_in(unet, 4)


def test_eight_channel_checkpoint_loads_as_is(kl_backbone, tmp_path):
    grown = load_image_conditioned_unet(kl_backbone, latent_channels=4)
    assert grown.config.in_channels == 8
    (tmp_path / "unet").mkdir()
    with torch.no_grad():
        grown.conv_in.weight[:, 4:].normal_()
    grown.save_pretrained(tmp_path / "unet")
    again = load_image_conditioned_unet(tmp_path, latent_channels=4)
    assert again.config.in_channels == 8
    assert torch.equal(again.conv_in.weight, grown.conv_in.weight)


def test_text_to_image_loader_keeps_four_channels_and_refuses_ip2p(kl_backbone, tmp_path):
    unet = load_text_to_image_unet(kl_backbone, latent_channels=4)
    assert unet.config.in_channels == 4 and not unet.training
    assert not any(p.requires_grad for p in unet.parameters())
    parts = load_components(kl_backbone, "epsilon", unet="text_to_image")
    assert parts.unet.config.in_channels == 4
    load_image_conditioned_unet(kl_backbone, latent_channels=4).save_pretrained(tmp_path / "unet")
    with pytest.raises(ComponentLoadError, match="image-conditioned .*SDEdit and ProxEdit"):
        load_text_to_image_unet(tmp_path, latent_channels=4)


def test_wrong_architecture_checkpoint_names_the_directory(tmp_path):
    tiny_unet(in_channels=5).save_pretrained(tmp_path / "unet")
    with pytest.raises(ComponentLoadError, match=rf"{tmp_path}/unet: UNet has in_channels=5"):
        load_image_conditioned_unet(tmp_path, latent_channels=4)
    with pytest.raises(ComponentLoadError, match="cannot load a UNet2DConditionModel"):
        load_image_conditioned_unet(tmp_path / "missing", latent_channels=4)
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"_class_name": "NotAModel"}))
    with pytest.raises(ComponentLoadError, match=rf"{tmp_path}/vae: unknown autoencoder class"):
        load_autoencoder(tmp_path)


def test_cross_attention_must_match_text_encoder(kl_backbone, tmp_path):
    import shutil

    for part in ("vae", "text_encoder", "tokenizer", "scheduler"):
        shutil.copytree(kl_backbone / part, tmp_path / part)
    tiny_unet(cross=16).save_pretrained(tmp_path / "unet")
    with pytest.raises(ComponentLoadError, match="cross_attention_dim=16"):
        load_components(tmp_path, "epsilon")


def test_pixel_unshuffle_autoencoder_is_lossless_and_round_trips(tmp_path):
    vae = PixelUnshuffleAutoencoder(downscale_factor=4)
    assert vae.config.latent_channels == 48
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 4
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    dist = vae.encode(x).latent_dist
    assert dist.mode().shape == (2, 48, 4, 4)
    assert torch.equal(dist.sample(), dist.mode())
    assert torch.equal(vae.decode(dist.mode()).sample, x)
    vae.save_pretrained(tmp_path / "vae")
    loaded = load_autoencoder(tmp_path)
    assert isinstance(loaded, PixelUnshuffleAutoencoder)
    assert loaded.config.downscale_factor == 4 and not loaded.training
    with pytest.raises(ValueError, match="not divisible"):
        vae.encode(torch.zeros(1, 3, 10, 10))
    with pytest.raises(ValueError, match="power of two"):
        PixelUnshuffleAutoencoder(downscale_factor=3)


def test_sampling_scheduler_by_class_name(kl_backbone):
    parts = load_components(kl_backbone, "v_prediction")
    assert parts.noise_scheduler.config.prediction_type == "v_prediction"
    sched = make_sampling_scheduler(
        "DPMSolverMultistepScheduler",
        parts.noise_scheduler.config,
        {"algorithm_type": "dpmsolver++"},
    )
    assert type(sched).__name__ == "DPMSolverMultistepScheduler"
    assert sched.config.prediction_type == "v_prediction"
    sched.set_timesteps(20)
    assert len(sched.timesteps) == 20
    with pytest.raises(ValueError, match="not a diffusers scheduler"):
        make_sampling_scheduler("UNet2DConditionModel", parts.noise_scheduler.config)


def test_sampler_that_cannot_handle_the_prediction_type_fails_early(kl_backbone):
    parts = load_components(kl_backbone, "sample")
    with pytest.raises(
        ValueError, match="EulerAncestralDiscreteScheduler cannot sample .*'sample'"
    ):
        check_sampler("EulerAncestralDiscreteScheduler", parts.noise_scheduler.config)
    check_sampler("DPMSolverMultistepScheduler", parts.noise_scheduler.config)


def test_sampler_check_runs_under_an_accelerator_default_device():
    # Lightning calls configure_model under the accelerator's default device; DPM-Solver turns
    # its timesteps into numpy, which fails off the CPU (here: the meta device stands in).
    from diffusers import DDPMScheduler

    config = DDPMScheduler(beta_schedule="scaled_linear", prediction_type="sample").config
    torch.set_default_device("meta")
    try:
        check_sampler("DPMSolverMultistepScheduler", config)
    finally:
        torch.set_default_device(None)


@pytest.mark.parametrize("stored", ["leading", "trailing", "linspace"])
def test_sampling_starts_at_the_last_timestep_whatever_the_checkpoint_stores(stored):
    from diffusers import DDPMScheduler

    from lego.models.editing.components import make_sampling_scheduler

    config = DDPMScheduler(num_train_timesteps=1000, steps_offset=1, timestep_spacing=stored).config
    for name in ("EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler"):
        scheduler = make_sampling_scheduler(name, config)
        scheduler.set_timesteps(100)
        assert int(scheduler.timesteps[0]) == 999, (name, stored)
    scheduler = make_sampling_scheduler("EulerAncestralDiscreteScheduler", config,
                                        {"timestep_spacing": "leading"})
    scheduler.set_timesteps(100)
    assert int(scheduler.timesteps[0]) == 991  # an explicit option still wins
