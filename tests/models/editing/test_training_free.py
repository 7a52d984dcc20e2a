import json

import pytest
import torch

from lego.cli import main
from lego.models.editing import ProxEditModule
from tests.models.editing.editing_helpers import make_batch
from tests.models.editing.test_diffusion_cli import tiny_config

TRAINING_FREE = {
    "configs/synthego/sdedit.yaml": ("SDEditModule", "lego.models.editing.sdedit", "strength"),
    "configs/synthego/proxedit.yaml": (
        "ProxEditModule", "lego.models.editing.proxedit", "quantile"
    ),
}


@pytest.mark.parametrize("shipped", sorted(TRAINING_FREE))
def test_test_through_the_cli_writes_frames_and_settings(
    shipped, synthego_backbone, synthego_root, tmp_path
):
    name, module, option = TRAINING_FREE[shipped]
    config = tiny_config(shipped, synthego_backbone, synthego_root, tmp_path)
    main(["test", "--config", str(config)])
    frames = [p for p in (tmp_path / "frames").rglob("*") if p.suffix in (".png", ".jpg")]
    assert len(frames) == 8
    report = json.loads((tmp_path / "metrics" / "metrics.json").read_text())
    assert report["samples_scored_rank0"] == 8 and report["metrics"]["psnr"] > 5
    generator = report["generator"]
    assert generator["class"] == f"{module}.{name}"
    assert generator["hparams"]["pretrained"] == str(synthego_backbone)
    assert generator["hparams"]["num_inference_steps"] == 3 and option in generator["hparams"]
    assert generator["checkpoint"] is None
    hparams = list((tmp_path / "logs").rglob("hparams.yaml"))
    assert len(hparams) == 1 and f"{option}:" in hparams[0].read_text()


@pytest.mark.parametrize("shipped", sorted(TRAINING_FREE))
def test_fit_is_refused_in_one_line(shipped, synthego_backbone, synthego_root, tmp_path, capsys):
    config = tiny_config(shipped, synthego_backbone, synthego_root, tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"error: {TRAINING_FREE[shipped][0]} is training-free")
    assert "Traceback" not in "\n".join(err) and len(err) <= 2
    assert not list((tmp_path / "logs").rglob("*.ckpt"))


def test_proxedit_module_equals_its_pipeline_and_is_batch_independent(synthego_backbone):
    module = ProxEditModule(pretrained=str(synthego_backbone), num_inference_steps=6,
                            guidance_scale=3.0, quantile=0.5)
    module.configure_model()
    module.eval()
    batch = make_batch(3, size=32)
    ours = module.generate(batch)
    assert ours.shape == (3, 3, 32, 32)
    scheduler = module.pipeline().scheduler
    assert scheduler.config.timestep_spacing == "leading" and not scheduler.config.clip_sample
    direct = module.pipeline()(
        prompt=list(batch.texts), image=(batch.input_frames + 1) / 2, num_inference_steps=6,
        guidance_scale=3.0, quantile=0.5, output_type="pt",
    ).images
    torch.testing.assert_close(ours.clamp(0, 1), direct, atol=1e-5, rtol=1e-4)
    alone = module.generate(make_batch(1, size=32))
    torch.testing.assert_close(ours[:1], alone, atol=1e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="proximal must be"):
        ProxEditModule(pretrained=str(synthego_backbone), proximal="l2")
