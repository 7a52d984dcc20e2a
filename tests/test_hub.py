"""Every hub id lives in lego.hub; the configs name only those, and none that was removed."""

import re
from pathlib import Path

import yaml

from lego import hub

#: Repositories removed from the hub (a default naming one fails on first use).
REMOVED = ("runwayml/stable-diffusion-v1-5",)
#: First folders of the local paths configs name.
LOCAL = {"data", "features", "logs", "checkpoints", "pretrained", "outputs", "metric_weights"}


def _strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def test_configs_name_only_the_hub_ids_of_lego_hub():
    named = set()
    for config in Path("configs").rglob("*.yaml"):
        for value in _strings(yaml.safe_load(config.read_text())):
            # a hub id is owner/name; local paths start with one of the project's folders
            if re.fullmatch(r"[\w.-]+/[\w.-]+", value) and value.split("/")[0] not in LOCAL:
                assert value in hub.HUB_IDS, f"{config}: hub id {value!r} is not in lego.hub"
                named.add(value)
    assert hub.STABLE_DIFFUSION_15 in named


def test_no_removed_repository_is_named():
    for root in ("lego", "configs"):
        for path in Path(root).rglob("*"):
            if path.suffix in {".py", ".yaml"} and path.name != "hub.py":
                text = path.read_text()
                for gone in REMOVED:
                    assert gone not in text, f"{path} names the removed {gone}"


def test_module_defaults_come_from_lego_hub():
    import inspect

    from lego.models.editing import InstructPix2PixModule, LegoDiffusionModule

    assert inspect.signature(LegoDiffusionModule).parameters["pretrained"].default \
        == hub.STABLE_DIFFUSION_15
    assert inspect.signature(InstructPix2PixModule).parameters["pretrained"].default \
        == hub.INSTRUCT_PIX2PIX
