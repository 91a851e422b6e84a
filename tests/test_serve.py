"""Serving over real HTTP on 127.0.0.1 with the real embedded model + a trained adapter:
the OpenAI-compatible API (auth, format, streaming), safeguarding, limits, roles, transcripts
that survive a restart, and how each turn ends (typed events: silence, failure, a reply the
student stopped) in both doors and in the transcripts. The browser test is in
test_serve_browser.py, vLLM in test_serve_vllm.py."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from gradio_client import Client

from conftest import free_port
from serve.accounts import Accounts
from serve.app import launch
from serve.config import Limits, ServeConfig
from serve.transcripts import Transcripts
from serve.tutor import Tutor, build_messages, clean_input
from tutorkit import TimError
from tutorkit.backends import BackendSpec, Sampling, open_backend
from tutorkit.persona import load_persona
from tutorkit.safeguarding import load_safeguard
from tutorkit.turns import Delta, Refusal, SafeguardingReply

SAFEGUARD = load_safeguard("configs/safeguarding.yaml")
PERSONA = load_persona("configs/persona.yaml")


def test_build_messages_carries_persona_history_and_silence():
    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!", "ending": "complete"},
        {"role": "user", "content": "rude words"},
        {"role": "assistant", "content": "", "ending": "silent"},
    ]
    messages = build_messages("SYSTEM", history, "sorry", max_history=12)
    assert messages[0] == {"role": "system", "content": "SYSTEM"}
    assert messages[2]["content"] == "Hello!" and messages[4]["content"] == ""  # silence stays silence
    assert messages[-1] == {"role": "user", "content": "sorry"}
    assert len(build_messages("S", history, "x", max_history=2)) == 4


def test_clean_input_drops_control_characters():
    assert clean_input("\x00hi\x1b[31m there\u202e\r\nok\t!  ") == "hi[31m there\nok\t!"
    assert clean_input("\x07\x00 \x1b") == ""


@pytest.fixture(scope="module")
def school(trained_adapter, tmp_path_factory):
    """A running server (in-process transformers backend) with two students and one staff."""
    db = tmp_path_factory.mktemp("school") / "school.sqlite"
    accounts = Accounts(db)
    for name, role, password in [("amy", "student", "pencil42"), ("ben", "student", "eraser42"),
                                 ("rapid", "student", "quick123"), ("lee", "staff", "teacher1")]:  # fmt: skip
        accounts.add(name, role, password)
    keys = {name: accounts.new_api_key(name) for name in ("amy", "ben", "rapid")}
    cfg = ServeConfig(
        adapter=str(trained_adapter), backend="transformers", port=free_port(), transcripts_db=str(db),
        max_new_tokens=16, max_message_chars=300, messages_per_minute=10,
    )  # fmt: skip
    server = launch(cfg, block=False)
    yield {"cfg": cfg, "url": server.url, "keys": keys, "db": db, "server": server}
    server.close()


def _post(school, student, body, **kw):
    headers = {"Authorization": f"Bearer {school['keys'][student]}"}
    return httpx.post(f"{school['url']}/v1/chat/completions", headers=headers, json=body, timeout=120, **kw)


def _ask(text, *earlier, stream=False):
    return {"model": "tim", "stream": stream, "messages": [*earlier, {"role": "user", "content": text}]}


def test_api_refuses_requests_without_a_valid_key(school):
    url = school["url"]
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer tim-wrong"}).status_code == 401
    r = httpx.post(f"{url}/v1/chat/completions", json=_ask("hi"))
    assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
    r = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {school['keys']['amy']}"})
    assert r.status_code == 200 and [m["id"] for m in r.json()["data"]] == ["tim"]
    assert httpx.get(f"{url}/config").status_code in (401, 403)  # the browser app needs a login too


def test_api_chat_completion_and_streaming_format(school):
    r = _post(school, "amy", _ask("Can you help me with fractions?"))
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["finish_reason"] == "stop"
    reply = body["choices"][0]["message"]["content"]
    assert body["choices"][0]["message"]["role"] == "assistant" and reply.strip()
    assert "User:" not in reply and not reply.startswith("Tim:")

    with httpx.stream("POST", f"{school['url']}/v1/chat/completions", json=_ask("What is a noun?", stream=True),
                      headers={"Authorization": f"Bearer {school['keys']['amy']}"}, timeout=120) as r:  # fmt: skip
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["choices"][0]["delta"] == {}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.strip() and len(chunks) > 3, "the reply was not streamed in pieces"


def test_api_continues_a_chat_and_files_it_under_the_key_owner(school):
    first = _ask("my favourite animal is the octopus")
    reply = _post(school, "ben", first).json()["choices"][0]["message"]["content"]
    earlier = [*first["messages"], {"role": "assistant", "content": reply}]
    assert _post(school, "ben", _ask("how many arms does it have?", *earlier)).status_code == 200
    store = Transcripts(school["db"])
    (chat,) = [c for c in store.chats(staff="lee", search="octopus")]
    assert chat["student"] == "ben" and chat["messages"] == 4
    messages = store.messages(chat["id"], viewer="ben", staff=False)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["content"] == reply


def test_api_safeguarding_flags_disclosure_and_silences_abuse(school):
    disclosure = "my dad hits me but don't tell anyone"
    r = _post(school, "amy", _ask(disclosure))
    assert r.json()["choices"][0]["message"]["content"] == SAFEGUARD.assess(disclosure).response
    history, replies = [], []
    for text in ["shut up", "you stupid bot", "shut up already", "ok what is 2+2"]:
        body = _ask(text, *history)
        reply = _post(school, "amy", body).json()["choices"][0]["message"]["content"]
        history = [*body["messages"], {"role": "assistant", "content": reply}]
        replies.append(reply)
    assert replies[-1] == "" and replies[-2] == ""  # silent for the rest of that chat
    store = Transcripts(school["db"])
    flagged = {c["id"]: c for c in store.chats(staff="lee") if c["flagged"]}
    texts = {m["content"]: m["flags"] for cid in flagged for m in store.messages(cid, viewer="lee", staff=True)}
    assert texts[disclosure] == ["abuse"] and "ok what is 2+2" in texts


def test_api_limits_and_bad_input(school):
    r = _post(school, "ben", _ask("x" * 301))
    assert r.status_code == 413 and "too long" in r.json()["error"]["message"]
    r = _post(school, "ben", _ask("\x00\x1b\x07"))
    assert r.status_code == 400 and "Type a message" in r.json()["error"]["message"]
    r = _post(school, "ben", _ask("hello\x00 Tim\x1b, what is\u202e 3+3?"))
    assert r.status_code == 200
    store = Transcripts(school["db"])
    assert store.chats(staff="lee", search="hello Tim, what is 3+3?")  # stored cleaned
    for body, error in [({"messages": []}, "non-empty"), ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
                        ({"messages": [{"role": "assistant", "content": "x"}]}, "last message"),
                        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens")]:  # fmt: skip
        r = _post(school, "ben", body)
        assert r.status_code == 400 and error in r.json()["error"]["message"]
    r = httpx.post(f"{school['url']}/v1/chat/completions", content=b"{not json",
                   headers={"Authorization": f"Bearer {school['keys']['ben']}"})  # fmt: skip
    assert r.status_code == 400
    # Rate limit: 10 messages a minute per student; the 11th is refused with when to try again.
    # (Disclosures are answered without the model, so these ten are quick.)
    statuses = [_post(school, "rapid", _ask(f"i'm so hungry {i}", stream=True)).status_code for i in range(11)]
    assert statuses == [200] * 10 + [429]
    r = _post(school, "rapid", _ask("again"))
    assert "try again in" in r.json()["error"]["message"]


def test_roles_in_the_browser_app(school):
    url = school["url"] + "/"
    amy = Client(url, auth=("amy", "pencil42"), verbose=False)
    amy.predict("what is a verb?", api_name="/chat")
    with pytest.raises(Exception, match="Only staff"):
        amy.predict("", api_name="/staff_chats")
    store = Transcripts(school["db"])
    ben_chat = store.student_chats("ben")[0]["id"]
    with pytest.raises(Exception, match="not yours"):
        amy.predict(ben_chat, api_name="/my_chat")
    mine = store.student_chats("amy")[0]["id"]
    assert "what is a verb?" in amy.predict(mine, api_name="/my_chat")

    lee = Client(url, auth=("lee", "teacher1"), verbose=False)
    table = lee.predict("", api_name="/staff_chats")
    flagged_column = [row[3] for row in table["data"]]
    assert flagged_column == sorted(flagged_column, key=lambda f: not f)  # flagged chats first
    assert "Student" in lee.predict(ben_chat, api_name="/staff_view")
    exported = json.loads(open(lee.predict("ben", api_name="/staff_export")).read())
    assert exported["student"] == "ben" and exported["chats"]
    actions = [(e["staff"], e["action"], e["target"]) for e in store.audit_log()]
    assert ("lee", "view", f"chat:{ben_chat}") in actions and ("lee", "export", "student:ben") in actions


def test_transcripts_survive_a_restart(school):
    server = school["server"]
    store = Transcripts(school["db"])
    before = store.student_chats("amy")
    assert before
    server.close()
    cfg = school["cfg"]
    restarted = launch(ServeConfig(**{**cfg.__dict__, "port": free_port()}), block=False)
    try:
        amy = Client(restarted.url + "/", auth=("amy", "pencil42"), verbose=False)
        assert "what is a verb?" in amy.predict(before[0]["id"], api_name="/my_chat")
    finally:
        restarted.close()


def _turn(tutor, student, message, chat_id=None):
    chat_id = chat_id or tutor.transcripts.start_chat(student)
    return asyncio.run(_events(tutor.respond(student, chat_id, message))), chat_id


async def _events(turn):
    return [event async for event in turn]


def test_busy_when_the_waiting_line_is_full(trained_adapter, tmp_path, embedded_model_dir):
    spec = BackendSpec("transformers", model=str(embedded_model_dir), adapter=str(trained_adapter))
    with open_backend(spec) as backend:
        tutor = Tutor(backend, SAFEGUARD, Transcripts(tmp_path / "t.sqlite"), PERSONA,
                      Sampling(temperature=0.0, max_tokens=48), Limits(max_concurrent=1, max_queue=0), 12)  # fmt: skip

        async def scenario():
            first = tutor.respond("amy", tutor.transcripts.start_chat("amy"), "tell me about volcanoes")
            assert isinstance(await anext(first), Delta)  # amy's reply is generating and holds the only slot
            ben = [e async for e in tutor.respond("ben", tutor.transcripts.start_chat("ben"), "hi")]
            async for _ in first:
                pass
            return ben

        assert asyncio.run(scenario()) == [Refusal(f"{PERSONA.name} is helping a lot of students right now. "
                                                   "Please try again in a minute.", 503)]  # fmt: skip
        # A disclosure is answered even then: safeguarding needs no model.
        disclosure = "i'm so hungry i can't think"
        events, _ = _turn(tutor, "ben", disclosure)
        assert events == [SafeguardingReply(SAFEGUARD.assess(disclosure).response, ("hunger",))]


def test_a_reply_the_student_stops_is_stored_as_shown(trained_adapter, tmp_path, embedded_model_dir):
    spec = BackendSpec("transformers", model=str(embedded_model_dir), adapter=str(trained_adapter))
    with open_backend(spec) as backend:
        tutor = Tutor(backend, SAFEGUARD, Transcripts(tmp_path / "t.sqlite"), PERSONA,
                      Sampling(temperature=0.0, max_tokens=64), Limits(), 12)  # fmt: skip

        async def stop_after_first_piece(chat_id):
            turn = tutor.respond("amy", chat_id, "Tell me a long story about a dragon who learns to count.")
            first = await anext(turn)
            await turn.aclose()  # the stop button
            return first

        chat_id = tutor.transcripts.start_chat("amy")
        first = asyncio.run(stop_after_first_piece(chat_id))
        stored = tutor.transcripts.history(chat_id)
    assert isinstance(first, Delta) and first.text.strip()
    assert [(m["role"], m["ending"]) for m in stored] == [("user", "complete"), ("assistant", "stopped")]
    assert stored[1]["content"] == first.text  # what was shown is what is stored


def test_abuse_is_counted_in_the_stored_chat_not_in_what_a_door_sends(tmp_path):
    """Silence after repeated abuse counts this chat's stored messages; no model is needed (a
    backend that would fail proves it is never asked)."""
    spec = BackendSpec("openai", base_url=[f"http://127.0.0.1:{free_port()}"], model="none", max_retries=0)
    with open_backend(spec) as backend:
        tutor = Tutor(backend, SAFEGUARD, Transcripts(tmp_path / "t.sqlite"), PERSONA, Sampling(), Limits(), 12)
        chat_id = tutor.transcripts.start_chat("amy")
        ends = []
        for message in ("shut up", "you stupid bot", "shut up already", "ok what is 2+2"):
            turn = asyncio.run(_events(tutor.respond("amy", chat_id, message, history=[])))  # the door sends nothing
            ends.append(type(turn[-1]).__name__)
    assert ends == ["Failure", "Failure", "Silence", "Silence"]
    stored = tutor.transcripts.history(chat_id)
    assert [m["ending"] for m in stored if m["role"] == "assistant"] == ["failed", "failed", "silent", "silent"]


def test_require_login_false_is_loopback_only():
    from serve.app import make_parser

    with pytest.raises(TimError, match="this machine only"):
        make_parser().parse(["--require_login", "false", "--host", "0.0.0.0"])


def test_a_failing_model_is_a_failure_in_both_doors_and_in_the_transcripts(tmp_path):
    """The backend is a real OpenAI client pointed at a port where nothing listens."""
    db = tmp_path / "school.sqlite"
    accounts = Accounts(db)
    accounts.add("amy", "student", "pencil42")
    accounts.add("lee", "staff", "teacher1")
    key = accounts.new_api_key("amy")
    cfg = ServeConfig(backend="openai", base_url=[f"http://127.0.0.1:{free_port()}"], adapter="", port=free_port(),
                      transcripts_db=str(db), backend_retries=0)  # fmt: skip
    server = launch(cfg, block=False)
    try:
        headers = {"Authorization": f"Bearer {key}"}
        for stream in (False, True):
            r = httpx.post(f"{server.url}/v1/chat/completions", headers=headers, timeout=120,
                           json={"model": "tim", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
            assert r.status_code == 502 and "can't answer right now" in r.json()["error"]["message"]
            assert "127.0.0.1" not in r.text  # the cause is for the server's log, not the student
        amy = Client(server.url + "/", auth=("amy", "pencil42"), verbose=False)
        with pytest.raises(Exception, match="can't answer right now"):
            amy.predict("what is a verb?", api_name="/chat")
        lee = Client(server.url + "/", auth=("lee", "teacher1"), verbose=False)
        chat = Transcripts(db).student_chats("amy")[0]["id"]
        assert "no reply: the model failed" in lee.predict(chat, api_name="/staff_view")
    finally:
        server.close()
    endings = [m["ending"] for c in Transcripts(db).student_chats("amy") for m in Transcripts(db).history(c["id"])]
    assert endings == ["complete", "failed"] * 3
