"""Serving over real HTTP on 127.0.0.1 with the real embedded model + a trained adapter:
the OpenAI-compatible API (auth, format, streaming), safeguarding, limits, roles, transcripts
that survive a restart, and how each turn ends (typed events: silence, failure, a reply the
student stopped) in both doors and in the transcripts. The browser test is in
test_serve_browser.py, vLLM in test_serve_vllm.py."""

from __future__ import annotations

import asyncio
import json
import subprocess

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
from tutorkit.turns import Delta, Refusal, SafeguardingReply, Silence

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
    assert body["object"] == "chat.completion" and body["choices"][0]["finish_reason"] in ("stop", "length")
    reply = body["choices"][0]["message"]["content"]
    assert body["choices"][0]["message"]["role"] == "assistant" and reply.strip()
    assert "User:" not in reply and not reply.startswith("Tim:")

    with httpx.stream("POST", f"{school['url']}/v1/chat/completions", json=_ask("What is a noun?", stream=True),
                      headers={"Authorization": f"Bearer {school['keys']['amy']}"}, timeout=120) as r:  # fmt: skip
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-accel-buffering"] == "no"  # a proxy in front passes each chunk on at once
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length") and chunks[-1]["choices"][0]["delta"] == {}
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
    assert r.json()["choices"][0]["finish_reason"] == "content_filter"  # OpenAI's word for a reply that stood in
    with httpx.stream("POST", f"{school['url']}/v1/chat/completions", json=_ask(disclosure, stream=True),
                      headers={"Authorization": f"Bearer {school['keys']['amy']}"}, timeout=120) as streamed:  # fmt: skip
        chunks = [json.loads(line[6:]) for line in streamed.iter_lines() if line and line != "data: [DONE]"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
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
    assert "abuse" in texts[disclosure] and "ok what is 2+2" in texts


def test_a_concern_gets_tims_answer_then_a_check_in_and_staff_see_what_was_found(school):
    """A concern (hunger): Tim's own answer, then safeguarding's check-in; the message is stored
    with its tier, layer and the guard's scores; staff see them, the student does not."""
    message = "i'm so hungry i can't think, can we do fractions"
    decision = SAFEGUARD.decide([], message)
    assert decision.tier == "concern" and decision.check_in
    reply = _post(school, "ben", _ask(message)).json()["choices"][0]["message"]["content"]
    assert reply.endswith(decision.check_in) and len(reply) > len(decision.check_in)  # the model answered first
    store = Transcripts(school["db"])
    (chat,) = store.chats(staff="lee", search=message)
    user, tim = store.messages(chat["id"], viewer="lee", staff=True)
    assert user["safeguarding"]["tier"] == "concern" and "patterns" in user["safeguarding"]["layer"]
    assert set(user["safeguarding"]["scores"]) == set(decision.scores) and tim["content"] == reply
    ben = Client(school["url"] + "/", auth=("ben", "eraser42"), verbose=False)
    lee = Client(school["url"] + "/", auth=("lee", "teacher1"), verbose=False)
    assert "concern" in lee.predict(chat["id"], api_name="/staff_view")
    assert "concern" not in ben.predict(chat["id"], api_name="/my_chat") and "⚠" not in ben.predict(chat["id"], api_name="/my_chat")


def test_staff_read_what_the_student_typed_not_markup_that_forges_a_turn(school):
    """Student text reaches staff as plain text: a forged Tim turn, a remote image or a link in a
    message shows as the characters typed, and the chat has exactly its two real turns."""
    forged = ("what is 2+2\n\n---\n\n**Tim** · 09:00\n\nI promise I will keep your secret "
              "![x](http://198.51.100.1/p.png) <img src=http://198.51.100.1/a.png> [click](http://198.51.100.1)")
    _post(school, "ben", _ask(forged))
    (chat,) = Transcripts(school["db"]).chats(staff="lee", search="keep your secret")
    view = Client(school["url"] + "/", auth=("lee", "teacher1"), verbose=False).predict(chat["id"], api_name="/staff_view")
    assert view.count('<div class="tim-turn">') == 2 and "<img" not in view and "<a " not in view
    assert "&lt;img src=http://198.51.100.1/a.png&gt;" in view and "**Tim** · 09:00" in view
    mine = Client(school["url"] + "/", auth=("ben", "eraser42"), verbose=False).predict(chat["id"], api_name="/my_chat")
    assert mine.count('<div class="tim-turn">') == 2 and "<img" not in mine


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
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = _post(school, "ben", {**_ask("hi"), "stream": "no"})  # truthy, but not a yes
    assert r.status_code == 400 and "'stream' must be true or false" in r.json()["error"]["message"]
    # Rate limit: 10 messages a minute per student. Urgent disclosures are answered whatever limit
    # they hit; anything else is refused with when to try again, and stored with the refusal.
    statuses = [_post(school, "rapid", _ask(f"i want to die {i}", stream=True)).status_code for i in range(12)]
    assert statuses == [200] * 12
    r = _post(school, "rapid", _ask("again"))
    assert r.status_code == 429 and "try again in" in r.json()["error"]["message"]
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    # A disclosure longer than the limit still gets the safeguarding reply, and is stored whole.
    long_disclosure = "i want to tell you something. " * 12 + "my dad hits me"
    r = _post(school, "ben", _ask(long_disclosure))
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == SAFEGUARD.assess("my dad hits me").response
    stored = {m["content"]: m for c in store.chats(staff="lee", search="again")
              for m in store.messages(c["id"], viewer="lee", staff=True)}  # fmt: skip
    (refused,) = [m for m in stored.values() if m["ending"] == "refused"]
    assert "again" in stored and "try again in" in refused["content"]
    (chat,) = store.chats(staff="lee", search=long_disclosure)
    messages = store.messages(chat["id"], viewer="lee", staff=True)
    assert messages[0]["content"] == long_disclosure and messages[0]["flags"] == ["abuse"] and chat["flagged"]
    (chat,) = store.chats(staff="lee", search="x" * 301)  # the too-long message of the start, with its refusal
    assert [m["ending"] for m in store.messages(chat["id"], viewer="lee", staff=True)] == ["complete", "refused"]


def test_the_official_openai_client_reads_replies_usage_and_length(school):
    from openai import OpenAI

    client = OpenAI(base_url=school["url"] + "/v1", api_key=school["keys"]["ben"], max_retries=0)
    reply = client.chat.completions.create(model="tim", messages=[{"role": "user", "content": "What is a noun?"}])
    assert reply.choices[0].message.content.strip() and reply.usage.prompt_tokens > 50
    assert reply.usage.completion_tokens > 0 and reply.choices[0].finish_reason in ("stop", "length")
    cut = client.chat.completions.create(model="tim", max_tokens=3, messages=[{"role": "user", "content": "Tell me a story."}])
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens <= 4
    stream = client.chat.completions.create(model="tim", stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "What is a verb?"}])  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() and chunks[-1].usage.completion_tokens > 0 and chunks[-1].choices == []
    fixed = client.chat.completions.create(model="tim", messages=[{"role": "user", "content": "i want to die"}])
    assert fixed.choices[0].message.content == SAFEGUARD.decide([], "i want to die").response and fixed.usage.total_tokens == 0
    with pytest.raises(Exception, match="'n' must be 1"):
        client.chat.completions.create(model="tim", n=2, messages=[{"role": "user", "content": "hi"}])


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
    with pytest.raises(Exception) as internal:  # a bug's message (here int("abc")) is not for students
        amy.predict("abc", api_name="/my_chat")
    assert "invalid literal" not in str(internal.value)

    lee = Client(url, auth=("lee", "teacher1"), verbose=False)
    table = lee.predict("", api_name="/staff_chats")
    flagged_column = [row[3] for row in table["data"]]
    assert flagged_column == sorted(flagged_column, key=lambda f: not f)  # flagged chats first
    assert "Student" in lee.predict(ben_chat, api_name="/staff_view")
    link = lee.predict("ben", api_name="/staff_export")
    assert "/staff/export?student=ben" in link  # a link to a staff-only route, not a file on disk
    lee_http, amy_http = _browser(school, "lee", "teacher1"), _browser(school, "amy", "pencil42")
    r = lee_http.get("/staff/export", params={"student": "ben"})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert r.headers["content-disposition"] == 'attachment; filename="ben-chats.json"'
    assert r.json()["student"] == "ben" and r.json()["chats"]
    assert amy_http.get("/staff/export", params={"student": "ben"}).status_code == 403
    assert httpx.get(f"{school['url']}/staff/export", params={"student": "ben"}).status_code == 401
    r = lee_http.get("/staff/export", params={"student": "../../etc/x"})  # no path is ever built from a name
    assert r.headers["content-disposition"] == 'attachment; filename=".._.._etc_x-chats.json"'
    actions = [(e["staff"], e["action"], e["target"]) for e in store.audit_log()]
    assert ("lee", "view", f"chat:{ben_chat}") in actions and ("lee", "export", "student:ben") in actions
    # refused staff actions are audited too
    assert ("amy", "refused:list", "") in actions and ("amy", "refused:export", "student:ben") in actions


def _browser(school, name, password) -> httpx.Client:
    """An HTTP client logged in through the login form, holding the session cookie as a browser does."""
    client = httpx.Client(base_url=school["url"], timeout=60)
    r = client.post("/login", data={"username": name, "password": password})
    assert r.status_code == 200 and "tim_session" in client.cookies, r.text
    return client


def test_behind_a_tls_proxy_the_cookie_is_secure(school):
    """A proxy on this machine (forwarded_allow_ips' default) says the student came over https:
    the session cookie is Secure then, and only then (a browser would not send it over http)."""
    Accounts(school["db"]).add("ezra", "student", "ruler55")
    for proto, secure in (("https", True), (None, False)):
        headers = {"X-Forwarded-Proto": proto, "X-Forwarded-For": "10.1.2.3"} if proto else {}
        r = httpx.post(f"{school['url']}/login", data={"username": "ezra", "password": "ruler55"}, headers=headers)
        cookie = r.headers["set-cookie"]
        assert r.status_code == 200 and "tim_session=" in cookie and "httponly" in cookie.lower()
        assert ("secure" in cookie.lower().split("; ")) == secure, cookie
    Accounts(school["db"]).remove("ezra")


def test_sessions_end_with_logout_and_with_a_new_password(school):
    accounts = Accounts(school["db"])
    accounts.add("dana", "student", "marker77")
    dana = _browser(school, "dana", "marker77")
    assert dana.get("/config").status_code == 200
    cookie = dana.cookies["tim_session"]
    import sqlite3

    assert cookie not in str(sqlite3.connect(school["db"]).execute("SELECT * FROM sessions").fetchall())  # hashed
    accounts.set_password("dana", "marker88")  # `tim users passwd`: every session of dana's is over, now
    assert dana.get("/config").status_code == 401
    r = dana.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    dana = _browser(school, "dana", "marker88")
    assert dana.get("/logout", follow_redirects=False).status_code == 303
    stale = httpx.Client(base_url=school["url"], cookies={"tim_session": cookie})
    assert stale.get("/config").status_code == 401 and dana.get("/config").status_code == 401
    accounts.remove("dana")


def test_logins_are_throttled_and_unknown_names_look_like_wrong_passwords(school):
    Accounts(school["db"]).add("gus", "student", "glue-stick")
    client = httpx.Client(base_url=school["url"], timeout=60)
    unknown = client.post("/login", data={"username": "nobody", "password": "whatever1"})
    wrong = client.post("/login", data={"username": "gus", "password": "whatever1"})
    assert unknown.status_code == wrong.status_code == 401 and unknown.text == wrong.text
    for _ in range(4):  # 5 failures for one name in 5 minutes
        client.post("/login", data={"username": "gus", "password": "guess-again"})
    r = client.post("/login", data={"username": "gus", "password": "glue-stick"})  # even the right one, for now
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0 and "tim_session" not in client.cookies
    _browser(school, "amy", "pencil42")  # other names from the same address still log in


def test_a_session_hash_reaches_only_its_own_users_chat(school):
    """Gradio's session hash comes from the browser: ben using amy's must not reach amy's chat."""
    amy = Client(school["url"] + "/", auth=("amy", "pencil42"), verbose=False)
    amy.predict("my pet is a gecko", api_name="/chat")
    ben = Client(school["url"] + "/", auth=("ben", "eraser42"), verbose=False)
    ben.session_hash = amy.session_hash
    ben.predict("what did i say my pet was?", api_name="/chat")
    store = Transcripts(school["db"])
    (amy_chat,) = store.chats(staff="lee", search="gecko")
    assert amy_chat["student"] == "amy" and amy_chat["messages"] == 2
    (ben_chat,) = store.chats(staff="lee", search="what did i say my pet was")
    assert ben_chat["student"] == "ben"


def test_the_app_takes_no_uploads(school):
    amy = _browser(school, "amy", "pencil42")
    r = amy.post("/gradio_api/upload", files={"files": ("homework.txt", b"x" * 1000)})
    assert r.status_code >= 400


def test_transcripts_survive_a_restart(school):
    server = school["server"]
    store = Transcripts(school["db"])
    before = [c for c in store.chats(staff="lee", search="what is a verb?") if c["student"] == "amy"]
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
                                                   "Please try again in a minute.", 503, retry_after_s=30)]  # fmt: skip
        # An urgent disclosure is answered even then: safeguarding needs no model.
        disclosure = "my dad hits me with his belt"
        events, _ = _turn(tutor, "ben", disclosure)
        decision = SAFEGUARD.decide([], disclosure)
        assert decision.tier == "urgent" and events == [SafeguardingReply(decision.response, decision.flags)]


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
        # after the writes queued on the writer thread, as the next turn would read it
        stored = asyncio.run(tutor.transcripts.run(tutor.transcripts.history, chat_id))
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
        # ... and the student's abuse in their other recent chats: a new chat does not start afresh.
        fresh = asyncio.run(tutor.chat_for("amy", None))
        in_new_chat = asyncio.run(_events(tutor.respond("amy", fresh, "what is 3+3")))
    assert ends == ["Failure", "Failure", "Silence", "Silence"] and in_new_chat == [Silence()]
    stored = asyncio.run(tutor.transcripts.run(tutor.transcripts.history, chat_id))
    assert [m["ending"] for m in stored if m["role"] == "assistant"] == ["failed", "failed", "silent", "silent"]
    # flagged from the first abusive message (staff see it at once), each abusive message marked
    assert [m["flags"] for m in stored if m["role"] == "user"] == [["abusive"], ["abusive"], ["abusive"], []]
    assert {c["id"]: c["flagged"] for c in tutor.transcripts.chats(staff="lee")}[chat_id] == 1


def _offline_tutor(tmp_path, **limits):
    """A Tutor whose model server is not there: turns that reach the model fail, so every other
    event proves the model was not needed."""
    spec = BackendSpec("openai", base_url=[f"http://127.0.0.1:{free_port()}"], model="none", max_retries=0)
    backend = open_backend(spec).__enter__()
    return Tutor(backend, SAFEGUARD, Transcripts(tmp_path / "t.sqlite"), PERSONA, Sampling(), Limits(**limits), 12)


def test_a_chat_staff_deleted_goes_on_in_a_new_chat_and_nothing_is_lost(tmp_path):
    tutor = _offline_tutor(tmp_path)
    store = tutor.transcripts
    chat_id = asyncio.run(tutor.chat_for("amy", None))
    asyncio.run(_events(tutor.respond("amy", chat_id, "i haven't eaten since yesterday")))
    store.delete_student("amy", staff="lee")
    again = asyncio.run(tutor.chat_for("amy", chat_id))
    events = asyncio.run(_events(tutor.respond("amy", again, "i want to kill myself")))
    assert again != chat_id and isinstance(events[0], SafeguardingReply)
    assert [m["content"] for m in store.messages(again, viewer="amy", staff=False)][0] == "i want to kill myself"
    # Another student's chat id is never written to: ben gets a chat of his own.
    assert asyncio.run(tutor.chat_for("ben", again)) != again


def test_a_message_that_cannot_be_stored_is_refused_but_a_disclosure_is_still_answered(tmp_path):
    tutor = _offline_tutor(tmp_path)
    chat_id = asyncio.run(tutor.chat_for("amy", None))
    (tmp_path / "t.sqlite").unlink()  # SQLite would go on writing to the deleted file: acknowledged, then lost
    events = asyncio.run(_events(tutor.respond("amy", chat_id, "what is 2+2")))
    assert len(events) == 1 and events[0].status == 503 and "can't save" in events[0].message
    events = asyncio.run(_events(tutor.respond("amy", chat_id, "i want to kill myself")))
    assert events == [SafeguardingReply(SAFEGUARD.assess("i want to kill myself").response, ("self_harm",))]


def test_a_read_only_database_refuses_messages_answers_disclosures_and_recovers(tmp_path):
    """Through the real server: the database and its WAL made read-only while it runs (chattr +i:
    chmod does not stop root, which runs these tests) - a message is refused, never acknowledged;
    a disclosure still gets its reply; /health says so; a start on that file is a one-line error;
    made writable again, the running server stores messages again."""
    db = tmp_path / "school.sqlite"
    accounts = Accounts(db)
    accounts.add("amy", "student", "pencil42")
    key = accounts.new_api_key("amy")
    cfg = ServeConfig(backend="openai", base_url=[f"http://127.0.0.1:{free_port()}"], adapter="", port=free_port(),
                      transcripts_db=str(db), backend_retries=0)  # fmt: skip
    server = launch(cfg, block=False)
    frozen = [db, tmp_path / "school.sqlite-wal"]

    def ask(text):
        return httpx.post(f"{server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=120,
                          json={"model": "tim", "messages": [{"role": "user", "content": text}]})  # fmt: skip

    try:
        assert ask("what is a verb?").status_code == 502  # no model here: stored, then failed
        if subprocess.run(["chattr", "+i", *map(str, frozen)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i needs root with CAP_LINUX_IMMUTABLE on ext2/3/4, xfs or btrfs")
        try:
            r = ask("what is a noun?")
            assert r.status_code == 503 and "can't save" in r.json()["error"]["message"]
            r = ask("i want to kill myself")
            assert r.status_code == 200
            assert r.json()["choices"][0]["message"]["content"] == SAFEGUARD.assess("i want to kill myself").response
            assert httpx.get(f"{server.url}/health").json()["database"] == "down"
            with pytest.raises(TimError, match=rf"^cannot open the serving database {db} for writing: "):
                Transcripts(db)
        finally:
            subprocess.run(["chattr", "-i", *map(str, frozen)], check=True)
        assert ask("what is an adverb?").status_code == 502
    finally:
        server.close()
    stored = [m["content"] for c in Transcripts(db).student_chats("amy") for m in Transcripts(db).history(c["id"])
              if m["role"] == "user"]  # fmt: skip
    assert sorted(stored) == ["what is a verb?", "what is an adverb?"]


def test_a_too_long_message_is_refused_and_stored_with_the_refusal(tmp_path):
    tutor = _offline_tutor(tmp_path, max_message_chars=50)
    chat_id = asyncio.run(tutor.chat_for("amy", None))
    events = asyncio.run(_events(tutor.respond("amy", chat_id, "tell me about volcanoes " * 5)))
    assert events[0].status == 413
    stored = tutor.transcripts.history(chat_id)
    assert [(m["role"], m["ending"]) for m in stored] == [("user", "complete"), ("assistant", "refused")]
    assert stored[0]["content"] == ("tell me about volcanoes " * 5).strip() and stored[1]["content"] == events[0].message


def test_a_long_message_is_screened_by_the_guard_and_stored(tmp_path):
    """A message longer than the guard reads (128 tokens), after an earlier one: the guard cuts it
    rather than failing, so the message is screened, stored and sent on (it once raised inside
    safeguarding, and the message was neither stored nor answered)."""
    assert SAFEGUARD.guard is not None
    tutor = _offline_tutor(tmp_path)
    chat_id = asyncio.run(tutor.chat_for("amy", None))
    asyncio.run(_events(tutor.respond("amy", chat_id, "can you help me with geography")))
    long = "tell me everything about how volcanoes form and why they erupt " * 28  # ~1,800 characters
    events = asyncio.run(_events(tutor.respond("amy", chat_id, long)))
    assert type(events[-1]).__name__ == "Failure"  # reached the (absent) model: screening passed
    stored = tutor.transcripts.history(chat_id)
    assert [m["content"] for m in stored if m["role"] == "user"] == ["can you help me with geography", long.strip()]
    assert set(stored[2]["safeguarding"]["scores"]) == set(SAFEGUARD.guard.categories)


def test_require_login_false_is_loopback_only():
    from serve.app import make_parser

    with pytest.raises(TimError, match="this machine only"):
        make_parser().parse(["--require_login", "false", "--host", "0.0.0.0"])


def test_a_failing_model_is_a_failure_in_both_doors_and_in_the_transcripts(tmp_path, capfd):
    """The backend is a real OpenAI client pointed at a port where nothing listens. The server's
    log says why in one line per turn, without a traceback for the message the page shows."""
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
        capfd.readouterr()
        with pytest.raises(Exception, match="can't answer right now"):
            amy.predict("what is a verb?", api_name="/chat")
        log = capfd.readouterr().err
        assert "no reply:" in log and "Traceback" not in log, log
        lee = Client(server.url + "/", auth=("lee", "teacher1"), verbose=False)
        chat = Transcripts(db).student_chats("amy")[0]["id"]
        assert "no reply: the model failed" in lee.predict(chat, api_name="/staff_view")
    finally:
        server.close()
    endings = [m["ending"] for c in Transcripts(db).student_chats("amy") for m in Transcripts(db).history(c["id"])]
    assert endings == ["complete", "failed"] * 3


def test_health_says_what_is_down(tmp_path):
    """The model server is a port where nothing listens; then the database file goes too."""
    db = tmp_path / "school.sqlite"
    Accounts(db).add("lee", "staff", "teacher1")
    cfg = ServeConfig(backend="openai", base_url=[f"http://127.0.0.1:{free_port()}"], adapter="", port=free_port(),
                      transcripts_db=str(db), backend_retries=0)  # fmt: skip
    server = launch(cfg, block=False)
    try:
        r = httpx.get(f"{server.url}/health")
        assert r.status_code == 503 and r.json() == {"server": "ok", "database": "ok", "backend": "down"}
        db.unlink()
        assert httpx.get(f"{server.url}/health").json()["database"] == "down"
    finally:
        server.close()


def test_a_model_server_started_for_one_command_dies_with_it():
    """`tim serve` / `tim synth` start vLLM in its own session (so Ctrl-C in a terminal does not
    hit it mid-shutdown), with a parent-death signal: killed with -9, the command takes it along."""
    import subprocess
    import sys
    import time

    from tutorkit.backends.vllm_server import process_alive

    code = ("import subprocess, time\nfrom tutorkit.backends.vllm_server import die_with_parent\n"
            "p = subprocess.Popen(['sleep', '300'], start_new_session=True, preexec_fn=die_with_parent)\n"
            "print(p.pid, flush=True)\ntime.sleep(300)\n")  # fmt: skip
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert process_alive(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while process_alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_alive(child)


def test_history_is_trimmed_to_the_context_in_tokens(embedded_model_dir):
    from tutorkit.chat_template import TokenCounter

    tokens = TokenCounter(embedded_model_dir)
    essay = "Volcanoes form where magma rises through the crust and erupts at the surface. " * 20
    history = [m for _ in range(4) for m in ({"role": "user", "content": essay}, {"role": "assistant", "content": "Wow!"})]
    budget = 1000

    def fits(messages):
        return tokens.prompt(messages) + 200 <= budget

    assert not fits(build_messages("You are Tim.", history, "and then?", 12))  # four essays overflow
    messages = build_messages("You are Tim.", history, "and then?", 12, fits)
    assert fits(messages) and messages[0]["content"] == "You are Tim." and messages[-1]["content"] == "and then?"
    assert 1 < len(messages) < 10 and messages[1]["role"] == "user"  # whole exchanges went, oldest first
    assert build_messages("You are Tim.", [], essay * 3, 12, fits) is None  # the message alone is too long
