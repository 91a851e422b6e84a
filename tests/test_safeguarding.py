"""Safeguarding flags and silence, independent of the model."""

from __future__ import annotations

import pytest

from tutorkit import TimError
from tutorkit.safeguarding import load_safeguard
from tutorkit.turns import SafeguardingReply, Silence, safeguarding_event

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
    decision = SAFEGUARD.decide([], message)
    assert decision.flags == a.flags and not decision.silence
    event = safeguarding_event(decision)
    assert isinstance(event, SafeguardingReply) and event.text == a.response
    reply = event.text
    assert any(w in reply for w in ("trusted adult", "teacher", "counselor"))
    assert "I won't tell" not in reply and "our secret" not in reply


def test_ordinary_messages_go_to_the_model():
    for message in ("can you help me with fractions", "I'm hungry for knowledge about volcanoes!", "what is 3 + 4"):
        decision = SAFEGUARD.decide([], message)
        assert decision.flags == () and safeguarding_event(decision) is None, message


def test_repeated_abuse_silences_the_chat():
    earlier, events = [], []
    for message in ("you stupid bot", "shut up", "ok fine what is 2+2", "shut up idiot"):
        events.append(safeguarding_event(SAFEGUARD.decide(earlier, message)))
        earlier.append(message)
    # silence_after: 3 -> the third abusive message (the fourth message) and everything after.
    assert events[:3] == [None, None, None] and events[3] == Silence()
    assert safeguarding_event(SAFEGUARD.decide(earlier, "please help with maths")) == Silence()
    # Even a disclosure in a silenced chat: flagged for staff, and no reply.
    late = SAFEGUARD.decide(earlier, "i'm so hungry")
    assert late.flags == ("hunger",) and late.silence and late.response is None


def test_bad_config_is_refused(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("disclosures:\n  hunger:\n    patterns: ['(unclosed']\n    response: hi\nabuse:\n  patterns: [x]\n")
    with pytest.raises(TimError, match=rf"^{bad}:3: disclosures.hunger: bad pattern '\(unclosed'"):
        load_safeguard(bad)
    bad.write_text("abuse:\n  patterns: [x]\nextra: 1\n")
    with pytest.raises(TimError, match=rf"^{bad}:3: unknown key 'extra'"):
        load_safeguard(bad)
    bad.write_text("abuse:\n  patterns: [x]\n  silence_after: often\n")
    with pytest.raises(TimError, match=rf"^{bad}:3: abuse.silence_after must be a whole number, got 'often'"):
        load_safeguard(bad)
    bad.write_text("disclosures: {}\n")
    with pytest.raises(TimError, match=rf"^{bad}:1: the file: missing key 'abuse'"):
        load_safeguard(bad)
