import json

import pytest

from lego.metrics.description_accuracy import (
    FIELDS,
    DescriptionAccuracy,
    DescriptionFields,
    field_hits,
    parse_description,
    truth_fields,
)
from lego.synthego import world

RIGHT = DescriptionFields(hand="right", object="cup", colour="red", place="upper right",
                          verb="pick up")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The right hand reaches to the red cup at the upper right of the table and lifts it.",
         RIGHT),
        ("Using the left hand, grasp the blue bowl on the lower left of the table and raise it.",
         DescriptionFields("left", "bowl", "blue", "lower left", "pick up")),
        ("The right hand holds the green knife over the orange onion at the upper middle of the "
         "table and cuts it in two.",
         DescriptionFields("right", "onion", "orange", "upper middle", "cut")),
        ("The left hand lifts the purple cup at the lower left of the table and tilts it over "
         "the red bowl to pour.",
         DescriptionFields("left", "cup", "purple", "lower left", "pour")),
        ("The right hand lifts the lid of the yellow box at the upper right of the table and "
         "opens it.",
         DescriptionFields("right", "box", "yellow", "upper right", "open")),
        ("With the left hand, push the cyan knife at the lower middle of the table away from you.",
         DescriptionFields("left", "knife", "cyan", "lower middle", "push")),
        ("", DescriptionFields()),
    ],
)
def test_parse_reads_each_template_form(text, expected):
    assert parse_description(text) == expected


def test_every_template_of_the_world_round_trips():
    for verb, templates in world.TEMPLATES.items():
        for template in templates:
            text = template.format(hand="left", colour="pink", noun="bread", place="lower right",
                                   tool_colour="cyan", colour2="green", noun2="bowl")
            hand = "left" if "{hand}" in template else "right"  # a knife is held in the right
            noun = "box" if verb == "open" else "bread"  # only boxes open
            expected = DescriptionFields(hand, noun, "pink", "lower right", verb)
            assert parse_description(text) == expected, text


@pytest.mark.parametrize("field", FIELDS)
def test_each_wrong_field_is_a_miss_of_that_field_only(field):
    wrong = {"hand": "left", "object": "bowl", "colour": "blue", "place": "lower left",
             "verb": "push"}[field]
    predicted = DescriptionFields(**{**RIGHT.__dict__, field: wrong})
    hits = field_hits(predicted, RIGHT)
    assert hits[field] is False
    assert hits["all"] is False
    assert all(hits[f] for f in FIELDS if f != field)


def test_unstated_field_is_a_miss():
    hits = field_hits(parse_description("Lift the red cup at the upper right."), RIGHT)
    assert hits["hand"] is False and hits["colour"] and hits["place"] and hits["verb"]


def test_metric_on_the_dataset_scores_oracle_100_and_swapped_colours_0(synthego_root):
    metadata = json.loads((synthego_root / "synthego_metadata.json").read_text())
    records = json.loads((synthego_root / "synthego_val.json").read_text())
    ids = [f"{c}/{a}" for c, acts in records.items() for a in acts]
    oracle = [records[c][a]["oracle_description"] for c, acts in records.items() for a in acts]
    metric = DescriptionAccuracy(metadata)
    metric.update(oracle, ids)
    scores = metric.compute()
    assert scores["count"].item() == len(ids)
    for name in (*FIELDS, "all"):
        assert scores[name].item() == pytest.approx(100.0), name

    def recolour(text, sid):
        true = truth_fields(metadata, sid).colour
        other = next(c for c in world.COLOURS if c != true and c not in text)
        return text.replace(f"{true} ", f"{other} ")

    wrong = DescriptionAccuracy(metadata)
    wrong.update([recolour(t, s) for t, s in zip(oracle, ids, strict=True)], ids)
    scores = wrong.compute()
    assert scores["colour"].item() == 0.0 and scores["all"].item() == 0.0
    assert scores["hand"].item() == pytest.approx(100.0)


def test_unknown_sample_and_length_mismatch_are_clear(synthego_root):
    metadata = json.loads((synthego_root / "synthego_metadata.json").read_text())
    metric = DescriptionAccuracy(metadata)
    with pytest.raises(KeyError, match="nope/a0"):
        metric.update(["x"], ["nope/a0"])
    with pytest.raises(ValueError, match="2 descriptions for 1"):
        metric.update(["x", "y"], ["a"])
