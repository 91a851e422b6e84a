"""Safeguarding flags and silence, independent of the model."""

from __future__ import annotations

import pytest

from serve.tutor import QUIET, fixed_reply
from serve.safeguarding import load_safeguard
from tim import TimError

SAFEGUARD = load_safeguard("configs/safeguarding.yaml")


@pytest.mark.parametrize(
    "message, flag",
    [
        ("sometimes i hurt myself when my grades are bad", "self_harm"),
        ("everyone would be better off without me", "self_harm"),
        ("my uncle hits me, don't tell anyone", "abuse"),
        ("i'm so hungry i can't think", "hunger"),
        ("my tummy hurts cuz im hungry", "hunger"),
        ("my mum's boyfriend gets angry and throws things", "trouble_at_home"),
        ("an older boy touched me and said it's our secret", "abuse"),
        ("a guy from my game wants to meet me at the park", "danger"),
    ],
)
def test_disclosures_are_flagged_and_answered_safely(message, flag):
    a = SAFEGUARD.assess(message)
    assert flag in a.flags and a.response
    reply = fixed_reply(SAFEGUARD, [], message)
    assert reply == a.response
    assert any(w in reply for w in ("trusted adult", "teacher", "counselor"))
    assert "I won't tell" not in reply and "our secret" not in reply


def test_ordinary_messages_go_to_the_model():
    for message in ("can you help me with fractions", "I'm hungry for knowledge about volcanoes!", "what is 3 + 4"):
        assert fixed_reply(SAFEGUARD, [], message) is None, message


def test_repeated_abuse_silences_the_chat():
    history = []
    replies = []
    for message in ("you stupid bot", "shut up", "ok fine what is 2+2", "shut up idiot"):
        replies.append(fixed_reply(SAFEGUARD, history, message))
        history += [{"role": "user", "content": message}, {"role": "assistant", "content": replies[-1] or "..."}]
    # silence_after: 3 -> the third abusive message (the fourth message) and everything after.
    assert replies[:3] == [None, None, None] and replies[3] == QUIET
    assert fixed_reply(SAFEGUARD, history, "please help with maths") == QUIET


def test_bad_config_is_refused(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("disclosures:\n  hunger:\n    patterns: ['(unclosed']\n    response: hi\nabuse:\n  patterns: [x]\n")
    with pytest.raises(TimError, match=r"disclosures.hunger: bad pattern"):
        load_safeguard(bad)
    bad.write_text("abuse:\n  patterns: [x]\nextra: 1\n")
    with pytest.raises(TimError, match="unknown key 'extra'"):
        load_safeguard(bad)
