"""A user's mistake ends with exit status 2 and one or two lines naming what to fix."""

import pytest

from lego.cli import main
from lego.data.io import DataFormatError
from tests.models.editing.test_diffusion_cli import tiny_config


def sdedit_config(backbone, data_root, tmp_path):
    return tiny_config("configs/synthego/sdedit.yaml", backbone, data_root, tmp_path)


def broken_records(data_root, tmp_path):
    """A copy of the dataset root whose val records file is not JSON."""
    root = tmp_path / "broken"
    root.mkdir()
    for item in data_root.iterdir():
        (root / item.name).symlink_to(item)
    (root / "synthego_val.json").unlink()
    (root / "synthego_val.json").write_text("{not json")
    return root


CASES = {
    # name: (command, extra options, what the message must name)
    "data root missing": ("test", ["--data.init_args.root=does/not/exist"], "does/not/exist"),
    "weights not found": ("test", ["--model.init_args.pretrained=no/such/model"],
                          "no/such/model/vae"),
    "option out of range": ("test", ["--model.init_args.strength=2.0"],
                            "invalid option: strength must be in (0, 1]"),
    "training-free given fit": ("fit", [], "SDEditModule is training-free"),
    "malformed records": ("test", ["--data.init_args.root={broken}"], "synthego_val.json"),
    "vlm_dim given to the data": ("test", ["--data.init_args.vlm_dim=8"],
                                  "data.init_args.vlm_dim=8: the VLM width is set once"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_errors_are_one_line(case, synthego_backbone, synthego_root, tmp_path, capsys):
    command, options, named = CASES[case]
    config = sdedit_config(synthego_backbone, synthego_root, tmp_path)
    if "{broken}" in " ".join(options):
        broken = broken_records(synthego_root, tmp_path)
        options = [o.format(broken=broken) for o in options]
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--config", str(config), *options])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and named in err[0], err
    assert err[1:] == ["(add --debug for the traceback)"]


def test_debug_shows_the_traceback(synthego_backbone, synthego_root, tmp_path, monkeypatch):
    config = sdedit_config(synthego_backbone, synthego_root, tmp_path)
    with pytest.raises(DataFormatError, match="does/not/exist"):
        main(["test", "--config", str(config), "--data.init_args.root=does/not/exist", "--debug"])
    monkeypatch.setenv("LEGO_DEBUG", "1")
    with pytest.raises(DataFormatError):
        main(["test", "--config", str(config), "--data.init_args.root=does/not/exist"])


def test_feature_cache_of_the_wrong_width_is_a_user_error(synthego_backbone):
    from lego.errors import ConfigError, UserError
    from lego.models.editing import LegoDiffusionModule
    from tests.models.editing.editing_helpers import make_batch

    module = LegoDiffusionModule(pretrained=str(synthego_backbone), vlm_dim=16, ema_decay=None)
    module.configure_model()
    with pytest.raises(ConfigError, match="width 8 but the model was configured with vlm_dim=16"):
        module.diffusion_loss(make_batch(2, size=32, dim=8))
    assert issubclass(ConfigError, UserError)  # so the CLI prints it as one line, exit 2
