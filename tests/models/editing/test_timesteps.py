import pytest
import torch

from lego.models.editing import InstructPix2PixModule, LegoDiffusionModule
from lego.models.editing.timesteps import check_timestep_sampling, draw_timesteps
from tests.models.editing.editing_helpers import make_batch


def test_uniform_is_the_papers_randint():
    torch.manual_seed(3)
    ours = draw_timesteps("uniform", 64, 1000, "cpu")
    torch.manual_seed(3)
    assert torch.equal(ours, torch.randint(0, 1000, (64,)))


@pytest.mark.parametrize(("mean", "lo", "hi"), [(0.0, 470, 530), (1.0, 660, 720)])
def test_logit_normal_density(mean, lo, hi):
    torch.manual_seed(0)
    t = draw_timesteps("logit_normal", 40_000, 1000, "cpu", logit_mean=mean, logit_std=1.0)
    assert t.dtype == torch.long and t.min() >= 0 and t.max() <= 999
    # median of sigmoid(N(m, 1)) x 1000 is sigmoid(m) x 1000: 500 and 731
    assert lo < t.float().mean() < hi
    assert abs(t.float().median() - 1000 * torch.sigmoid(torch.tensor(mean))) < 10
    noisy = (t >= 750).float().mean()
    # P(t >= 750) = P(N(m, 1) >= logit(0.75) = 1.10): 0.46 for m = 1, 0.14 for m = 0
    assert (noisy > 0.40) if mean > 0 else (noisy < 0.20)


def test_bad_options_are_refused(synthego_backbone):
    with pytest.raises(ValueError, match="timestep_sampling must be one of"):
        check_timestep_sampling("cubic", 1.0)
    with pytest.raises(ValueError, match="timestep_logit_std must be positive"):
        LegoDiffusionModule(pretrained=str(synthego_backbone), timestep_sampling="logit_normal",
                            timestep_logit_std=0.0)


def test_module_trains_on_the_chosen_density(synthego_backbone, monkeypatch):
    module = InstructPix2PixModule(pretrained=str(synthego_backbone), ema_decay=None,
                                   timestep_sampling="logit_normal", timestep_logit_mean=2.0,
                                   timestep_logit_std=0.5)
    assert module.hparams.timestep_sampling == "logit_normal"
    module.configure_model()
    seen = []
    original = module.unet.forward

    def spy(sample, timestep, **kw):
        seen.append(timestep.detach())
        return original(sample, timestep, **kw)

    monkeypatch.setattr(module.unet, "forward", spy)
    batch = make_batch(4, dim=None)
    torch.manual_seed(0)
    for _ in range(8):
        module.diffusion_loss(batch)
    t = torch.cat(seen)
    # t / 1000 = sigmoid(N(2, 0.5)) is below 0.5 with probability 3e-5 (4 sigma); uniform
    # timesteps would put about 16 of these 32 below 500
    assert t.shape == (32,) and t.min() >= 500
