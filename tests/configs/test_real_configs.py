"""The real-dataset configs run the paper's rows."""

from pathlib import Path

import pytest
import yaml

from lego import hub

REAL = ["ego4d", "epic_kitchens"]


def load(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text())


@pytest.mark.parametrize("dataset", REAL)
def test_ip2p_is_the_papers_row(dataset):
    """The paper's IP2P: the LEGO recipe without the VLM, from SD 1.5, on the raw narration."""
    ip2p, lego = load(f"configs/{dataset}/ip2p.yaml"), load(f"configs/{dataset}/lego.yaml")
    assert ip2p["model"]["class_path"] == "InstructPix2PixModule"
    assert ip2p["model"]["init_args"]["pretrained"] == hub.STABLE_DIFFUSION_15
    assert lego["model"]["init_args"]["pretrained"] == hub.STABLE_DIFFUSION_15
    assert ip2p["data"]["init_args"]["text_source"] == "raw_action"
    for key in ("learning_rate", "weight_decay", "ema_decay", "num_inference_steps",
                "text_guidance_scale", "image_guidance_scale", "sampler"):
        assert ip2p["model"]["init_args"][key] == lego["model"]["init_args"][key], key
    for key in ("devices", "accumulate_grad_batches", "max_epochs"):
        assert ip2p["trainer"][key] == lego["trainer"][key], key


@pytest.mark.parametrize("dataset", REAL)
def test_released_instruct_pix2pix_is_a_named_variant(dataset):
    variant = load(f"configs/{dataset}/ip2p_timbrooks.yaml")
    assert variant["model"]["init_args"]["pretrained"] == hub.INSTRUCT_PIX2PIX
    assert variant["trainer"]["logger"]["init_args"]["name"] == f"{dataset}_ip2p_timbrooks"


@pytest.mark.parametrize("dataset", REAL)
def test_lora_tuning_uses_llavas_lora_learning_rates(dataset):
    model = load(f"configs/{dataset}/instruct.yaml")["model"]["init_args"]
    assert model["finetune"] == "lora"
    assert model["learning_rate"] == 2e-4 and model["projector_learning_rate"] == 2e-5


@pytest.mark.parametrize("config", ["lego", "ip2p", "ip2p_timbrooks"])
@pytest.mark.parametrize("dataset", REAL)
def test_test_writes_and_scores_frames_as_the_paper(dataset, config):
    callbacks = {c["class_path"]: c.get("init_args", {})
                 for c in load(f"configs/{dataset}/{config}.yaml")["trainer"]["callbacks"]}
    writer = callbacks["FramesWriter"]
    assert (writer["stretch"], writer["image_format"], writer["jpeg_quality"]) == (
        "minmax", "jpeg", 75)
    metrics = callbacks["EditMetricsCallback"]
    assert metrics["protocol"] == "official"
    name = {"ego4d": "ego4d", "epic_kitchens": "epickitchen"}[dataset]
    assert metrics["dataset"] == name and metrics["records"].endswith(f"{name}_val.json")
    assert metrics["ground_truth_dir"].endswith("/val_gt_for_metric")


@pytest.mark.parametrize("dataset", REAL)
def test_instruct_describe_and_lego_configs_chain(dataset):
    """The describe stage runs the tuned VLM of stage 1, with its template, and writes features of
    the width and token count the LEGO stage expects."""
    instruct = load(f"configs/{dataset}/instruct.yaml")["model"]["init_args"]
    describe_config = load(f"configs/{dataset}/describe.yaml")
    describe = describe_config["model"]["init_args"]
    lego = load(f"configs/{dataset}/lego.yaml")
    assert describe["model_name_or_path"] == instruct["model_name_or_path"]
    assert describe["adapter"] == f"{instruct['export_dir']}/adapter"
    for key in ("query", "system_prompt", "conversation", "use_chat_template", "image_source"):
        assert describe.get(key) == instruct.get(key), key
    width, tokens = hub.VLM_DIMS[instruct["model_name_or_path"]]
    assert lego["model"]["init_args"]["vlm_dim"] == width
    assert lego["data"]["init_args"]["vlm_image_tokens"] == tokens
    assert "vlm_dim" not in lego["data"]["init_args"]  # the CLI links it from the model
    writer = next(c["init_args"] for c in describe_config["trainer"]["callbacks"]
                  if c["class_path"] == "DescriptionWriter")
    assert lego["data"]["init_args"]["features"] == writer["cache_root"]
    assert lego["data"]["init_args"]["records_dir"] == writer["records_dir"]
    assert describe_config["data"]["init_args"]["skip_described"] == writer["cache_root"]
