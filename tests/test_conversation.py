"""The conversation schema, the deterministic split, and the speaker heuristics (tutorkit/speakers.py)."""

from __future__ import annotations

import json

import pytest

from tutorkit import TimError
from tutorkit.conversation import read_conversations, split_of, split_rows, validate_messages
from tutorkit.speakers import (
    clean_reply, introduced_names, is_named_speaker_line, is_speaker_line, may_become_speaker_label, names_pattern,
    split_label, starts_other_speaker,
)  # fmt: skip

S = {"role": "system", "content": "You are Tim."}
U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "Hello! What shall we learn?"}


def test_valid_conversations():
    validate_messages([S, U, A], "x")
    validate_messages([U, A, U, {"role": "assistant", "content": ""}], "x")  # silent turn
    validate_messages([U, {**A, "weight": 0}, U, {**A, "weight": 1}], "x")  # context turn, trained turn


@pytest.mark.parametrize(
    "messages, error",
    [
        ([], "non-empty list"),
        ([S, U], "no assistant turn"),
        ([S, A], "'assistant' but 'user' was expected"),
        ([U, A, A], "'assistant' but 'user' was expected"),
        ([U, S, A], "only the first message"),
        ([{"role": "tutor", "content": "x"}], "role 'tutor'"),
        ([U, {"role": "assistant", "content": 3}], "content must be a string, got int"),
        ([{"role": "user", "content": "  "}, A], "(user) is empty"),
        ([U, {"role": "assistant", "content": "x", "name": "Tim"}], "must be an object with 'role' and 'content'"),
        ([{**U, "weight": 0}, A], "message 0 (user) has weight 0; only assistant turns take a weight, 0 or 1"),
        ([U, {**A, "weight": 0.5}], "has weight 0.5"),
        ([U, {**A, "weight": True}], "has weight True"),
        ([U, {**A, "weight": 0}], "every assistant turn is silent or has weight 0, so there is nothing to learn"),
    ],
)
def test_invalid_conversations(messages, error):
    with pytest.raises(TimError, match="^where: .*" + __import__("re").escape(error)):
        validate_messages(messages, "where")


def test_read_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"messages": [U, A]}) + "\n\n" + json.dumps({"messages": [U]}) + "\n")
    with pytest.raises(TimError, match=rf"^{path}:3: conversation has no assistant turn$"):
        read_conversations(path)
    path.write_text("{not json\n")
    with pytest.raises(TimError, match=rf"^{path}:1: not valid JSON"):
        read_conversations(path)
    path.write_text("")
    with pytest.raises(TimError, match="empty file"):
        read_conversations(path)


def test_clean_reply_keeps_only_the_speakers_words():
    assert clean_reply("Tim: Great question!", "Tim") == "Great question!"
    assert clean_reply("Sure, let's try.\nStudent: ok\nTim: again", "Tim") == "Sure, let's try."
    assert clean_reply('  "Hello there."  ', "Tim") == "Hello there."
    assert clean_reply("Line one.\nLine two.", "Tim") == "Line one.\nLine two."
    assert clean_reply("User:", "Tim") == ""
    assert clean_reply("Well done!\n**", "Tim") == "Well done!"
    assert starts_other_speaker("Nice.\nUser: and then", "Tim") and not starts_other_speaker("Tim: Nice.", "Tim")
    # The persona's name is a label, whatever it is; another tutor's name is not.
    assert clean_reply("Ada: Hello!\nAda: more", "Ada") == "Hello!"
    assert clean_reply("Tim: Hello!", "Ada") == "Tim: Hello!"
    assert clean_reply("Hint: start with the tens.", "Tim") == "Hint: start with the tens."


def test_may_become_speaker_label():
    for partial in ["", "T", "Ti", "Tim", "**Tim", "Tim ", "assist", "Me"]:
        assert may_become_speaker_label(partial, "Tim"), partial
    for partial in ["I", "Hello", "Tim is", "Timothy", "Me too", "Tim\nsays"]:
        assert not may_become_speaker_label(partial, "Tim"), partial
    assert may_become_speaker_label("Ad", "Ada") and not may_become_speaker_label("Ad", "Tim")
    # What is held back is exactly what cleaning could still rewrite.
    assert clean_reply("Tim: Hello", "Tim") == "Hello" and clean_reply("Tim is here", "Tim") == "Tim is here"


def test_labels_named_speakers_and_self_introductions():
    assert split_label("**Student:** hi there") == ("Student", "hi there")
    assert split_label("> TIM: What do you know?") == ("TIM", "What do you know?")
    assert split_label("no label here") is None
    assert is_speaker_line("- tutor: ok", "Tim") and not is_speaker_line("Note: ok", "Tim")
    assert is_named_speaker_line("*Alex: hello") and not is_named_speaker_line("Alex said hi")
    assert introduced_names("Hi, I'm Sarah! My name is Max.") == {"Sarah", "Max"}
    assert introduced_names("I’m Tim and I'm Glad you came. I am so happy.") == {"Tim"}
    other = names_pattern(["SmolLM", "Chat GPT", "Hugging Face"])
    for text in ("I am SmolLM2", "ask chatgpt", "Chat GPT-4o says", "made by HuggingFace"):
        assert other.search(text), text
    for text in ("I like smol things", "a llama", "GPTs"):
        assert not other.search(text), text
    assert names_pattern([]) is None


def test_split_is_by_key_and_small_datasets_get_a_validation_row():
    keys = [f"topic:ten:k{i}#0" for i in range(200)]
    assert [split_of(k, 0.1) for k in keys] == [split_of(k, 0.1) for k in keys]  # a function of the key
    assert 5 < sum(split_of(k, 0.1) == "validation" for k in keys) < 40
    assert all(split_of(k, 0.0) == "train" for k in keys)
    rows = [{"key": k} for k in keys[:3] if split_of(k, 0.1) == "train"][:2]
    split = split_rows(rows, lambda r: r["key"], 0.1)
    assert len(split["validation"]) == 1 and len(split["train"]) == 1
    assert split_rows(rows, lambda r: r["key"], 0.0)["validation"] == []
