"""The conversation schema and reply cleaning."""

from __future__ import annotations

import json

import pytest

from tim import TimError
from tim.conversation import clean_reply, read_conversations, starts_other_speaker, validate_messages

S = {"role": "system", "content": "You are Tim."}
U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "Hello! What shall we learn?"}


def test_valid_conversations():
    validate_messages([S, U, A], "x")
    validate_messages([U, A, U, {"role": "assistant", "content": ""}], "x")  # silent turn


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
    assert clean_reply("Tim: Great question!") == "Great question!"
    assert clean_reply("Sure, let's try.\nStudent: ok\nTim: again") == "Sure, let's try."
    assert clean_reply('  "Hello there."  ') == "Hello there."
    assert clean_reply("Line one.\nLine two.") == "Line one.\nLine two."
    assert clean_reply("User:") == ""
    assert clean_reply("Well done!\n**") == "Well done!"
    assert starts_other_speaker("Nice.\nUser: and then") and not starts_other_speaker("Tim: Nice.")


def test_may_become_speaker_label():
    from tim.conversation import clean_reply, may_become_speaker_label

    for partial in ["", "T", "Ti", "Tim", "**Tim", "Tim ", "assist", "Me"]:
        assert may_become_speaker_label(partial), partial
    for partial in ["I", "Hello", "Tim is", "Timothy", "Me too", "Tim\nsays"]:
        assert not may_become_speaker_label(partial), partial
    # What is held back is exactly what cleaning could still rewrite.
    assert clean_reply("Tim: Hello") == "Hello" and clean_reply("Tim is here") == "Tim is here"
