"""Serving: the Gradio app on 127.0.0.1 answers over real HTTP with base model + trained adapter."""

from __future__ import annotations

from gradio_client import Client

from conftest import free_port
from serve.app import QUIET, ServeConfig, build_messages, launch


def test_build_messages_carries_persona_history_and_silence():
    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
        {"role": "user", "content": "rude words"},
        {"role": "assistant", "content": QUIET},
    ]
    messages = build_messages("SYSTEM", history, "sorry", max_history=12)
    assert messages[0] == {"role": "system", "content": "SYSTEM"}
    assert messages[2]["content"] == "Hello!" and messages[4]["content"] == ""  # silence stays silence
    assert messages[-1] == {"role": "user", "content": "sorry"}
    assert len(build_messages("S", history, "x", max_history=2)) == 4


def test_chat_over_http_with_trained_adapter(trained_adapter, tmp_path):
    db = tmp_path / "transcripts.sqlite"
    cfg = ServeConfig(adapter=str(trained_adapter), port=free_port(), max_new_tokens=24, transcripts_db=str(db),
                      require_login=False)  # fmt: skip
    app = launch(cfg, block=False)
    try:
        client = Client(f"http://127.0.0.1:{cfg.port}/", verbose=False)
        job = client.submit("Can you help me with fractions?", api_name="/chat")
        updates = list(job)
        reply = job.result()
        assert isinstance(reply, str) and reply.strip()
        assert len(updates) > 1, "the reply was not streamed"
        assert "User:" not in reply and not reply.startswith("Tim:")
        # Safeguarding answers a disclosure itself, through the same app, whatever the model says.
        from serve.safeguarding import load_safeguard

        disclosure = "my dad hits me but don't tell anyone"
        expected = load_safeguard("configs/safeguarding.yaml").assess(disclosure).response
        assert client.predict(disclosure, api_name="/chat") == expected
    finally:
        app.close()
    # The chat is in the transcripts, which outlive the server, flagged by the disclosure.
    from serve.transcripts import Transcripts

    store = Transcripts(db)
    chats = store.chats(staff="ms.lee")
    assert len(chats) == 1 and chats[0]["flagged"] == 1
    messages = store.messages(chats[0]["id"], viewer="ms.lee", staff=True)
    assert [(m["role"], m["flags"]) for m in messages] == [("user", []), ("assistant", []), ("user", ["abuse"]), ("assistant", [])]
    assert messages[1]["content"] == reply.strip() and messages[2]["content"] == disclosure
    assert messages[3]["content"] == expected


def test_login_required_and_chats_stored_per_student(trained_adapter, tmp_path):
    import httpx
    import pytest

    from serve.accounts import Accounts
    from serve.transcripts import Transcripts
    from tim import TimError

    db = tmp_path / "school.sqlite"
    cfg = ServeConfig(adapter=str(trained_adapter), port=free_port(), max_new_tokens=8, transcripts_db=str(db))
    with pytest.raises(TimError, match="no accounts yet"):
        launch(cfg, block=False)
    Accounts(db).add("amy", "student", "pencil42")
    app = launch(cfg, block=False)
    try:
        url = f"http://127.0.0.1:{cfg.port}/"
        assert httpx.get(url + "config").status_code in (401, 403)  # not logged in: refused
        with pytest.raises(Exception):
            Client(url, auth=("amy", "wrong-password"), verbose=False)
        client = Client(url, auth=("amy", "pencil42"), verbose=False)
        client.predict("I'm so hungry, I didn't eat today", api_name="/chat")
    finally:
        app.close()
    store = Transcripts(db)
    (chat,) = store.chats(staff="ms.lee")
    assert chat["student"] == "amy" and chat["flagged"] == 1
    assert store.messages(chat["id"], viewer="amy", staff=False)[0]["flags"] == ["hunger"]
