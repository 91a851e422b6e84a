"""The guard's labelled data (data/safeguarding/): the frozen test split is big enough per
category, the training rows keep away from it (no twins), and bad files name their line."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT
from tutorkit import TimError
from tutorkit.safeguarding_data import CATEGORIES, LabelledChat, load_labelled, split, twins

TEST = ROOT / "data/safeguarding/test.jsonl"


def test_the_frozen_test_split_covers_every_category_and_hard_negatives():
    items = load_labelled(TEST)
    assert len(items) >= 400
    for category in CATEGORIES:
        assert sum(category in it.labels for it in items) >= 40, category
    assert sum(it.hard_negative for it in items) >= 150
    assert all(it.provenance.get("scenario") for it in items)  # written from a scenario, by another hand


def test_training_rows_keep_away_from_the_test_split():
    """What `tim guard train` learns from and chooses thresholds on shares no 5-word run and no
    reworded copy with a test item; the team's rows are >= 3,000 before that."""
    from train.guard import GuardTrainConfig, load_splits
    from tutorkit.config import load_dataclass

    cfg = load_dataclass(GuardTrainConfig, ROOT / "configs/guard.yaml")
    assert sum(len(load_labelled(ROOT / f)) for f in cfg.data_files) >= 3000
    train, dev, dropped = load_splits(cfg)
    assert dropped and not {it.id for it in train + dev} & set(dropped)
    assert twins(train + dev, load_labelled(TEST)) == {}
    assert len(train) + len(dev) >= 3000 and 0.15 < len(dev) / (len(train) + len(dev)) < 0.25


def test_twins_share_a_five_word_run():
    test = [LabelledChat("t1", ("my coach says im his favourite and to keep it between us",), ("sexual_abuse",)),
            LabelledChat("t2", ("theres never any food in our house after wednesday",), ("neglect",))]  # fmt: skip
    rows = [
        LabelledChat("a", ("lol the coach says im his favourite and buys me stuff",), ("sexual_abuse",)),  # a 5-word run
        LabelledChat("b", ("maths first", "There's never any food in our house, after 3",), ("neglect",)),  # case, apostrophe
        LabelledChat("c", ("my coach shouted at the whole team today",), ()),
        LabelledChat("d", ("theres never any", "food in our house"), ("neglect",)),  # a run does not cross messages
    ]
    assert twins(rows, test) == {"a": "t1", "b": "t2"}
    train, dev = split([LabelledChat(str(i), ("x",), ()) for i in range(1000)], 5)
    assert 150 < len(dev) < 250 and split(train + dev, 5)[1] == dev  # stable: the same ids, whatever the order


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"id": "x", "chat": [], "labels": []}), "'chat' must be a non-empty list"),
        (json.dumps({"id": "x", "chat": ["hi"], "labels": ["grief"]}), "'labels' must be a list of self_harm"),
        (json.dumps({"id": "x", "chat": ["hi"], "labels": ["neglect"], "hard_negative": True}), "'hard_negative'"),
    ],
)
def test_a_bad_line_is_named(tmp_path, line, message):
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps({"id": "ok", "chat": ["fine"], "labels": []}) + "\n" + line + "\n")
    with pytest.raises(TimError, match=rf"^{path}:2: {message}"):
        load_labelled(path)
