import pytest

from lego.data import clean_ego4d_narration, lemmatize_verb

TABLE = [
    ("#C C picks up the knife", "pick up the knife"),
    ("#C C washes the plate with a sponge", "wash the plate with a sponge"),
    ("#C C carries a bag", "carry a bag"),
    ("#C C cuts the onion", "cut the onion"),
    ("#C C puts the cup on the table", "put the cup on the table"),
    ("#C C ties the lace", "tie the lace"),
    ("#C C opens the fridge", "open the fridge"),
    ("#C C presses the button", "press the button"),
    ("#C C touches the cup", "touch the cup"),
    ("#C C mixes the flour", "mix the flour"),
    ("#C C goes to the sink", "go to the sink"),
    ("#C C does the laundry", "do the laundry"),
    ("#C C has a drink", "have a drink"),
    ("#C C stirs the pot", "stir the pot"),
    ("#C C dries the dish", "dry the dish"),
    ("#C C squeezes a lemon", "squeeze a lemon"),
    ("#C C uses the knife", "use the knife"),
    ("#C C closes the drawer", "close the drawer"),
    ("#C C removes the lid", "remove the lid"),
    ("#C C places the cup", "place the cup"),
    ("#c c scoops the rice", "scoop the rice"),
    ("#C C  lifts  the box ", "lift the box"),
    ("#C C pick up the knife", "pick up the knife"),
]


@pytest.mark.parametrize(("narration", "expected"), TABLE)
def test_ego4d_narrations_are_cleaned_like_the_paper(narration, expected):
    assert clean_ego4d_narration(narration) == expected


@pytest.mark.parametrize(
    "label",
    ["pick up the knife", "take plate", "#O man X opens the door", "open fridge", "#unsure"],
)
def test_labels_without_narrator_marks_are_not_mangled(label):
    assert clean_ego4d_narration(label) == label.strip()


@pytest.mark.parametrize(
    ("word", "lemma"),
    [("Picks", "pick"), ("stirring", "stir"), ("placed", "place"), ("taking", "take"),
     ("is", "be"), ("press", "press"), ("cut", "cut")],
)
def test_lemmatize_verb(word, lemma):
    assert lemmatize_verb(word) == lemma
