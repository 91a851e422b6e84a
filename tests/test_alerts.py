"""Staff alerts through the real server: an urgent message reaches a real SMTP receiver and a real
HTTP receiver on 127.0.0.1, retried while they are down (and shown as not sent on the staff
page), never sent twice; the staff queue lists urgent and concern messages, only to staff, and
an acknowledgement needs a note and is audited. The model server is a port where nothing
listens: alerts and the queue do not need the model."""

from __future__ import annotations

import email
import email.policy
import json
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from gradio_client import Client

from conftest import free_port
from serve.accounts import Accounts
from serve.alerts import AlertChannels, Alerter
from serve.app import launch
from serve.config import ServeConfig
from serve.transcripts import Transcripts, TranscriptsError

URGENT = "i want to kill myself"
CONCERN = "i havent eaten since yesterday, theres nothing in the house"


class SMTPReceiver(socketserver.ThreadingTCPServer):
    """A real SMTP server (the commands smtplib sends), keeping each message it receives."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, port: int):
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        super().__init__(("127.0.0.1", port), SMTPHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class SMTPHandler(socketserver.StreamRequestHandler):
    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        sender, recipients = "", []
        self.reply("220 test ESMTP")
        while line := self.rfile.readline().decode().rstrip("\r\n"):
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.reply("250 test")
            elif verb == "MAIL":
                sender, recipients = line.split(":", 1)[1].strip(" <>"), []
                self.reply("250 OK")
            elif verb == "RCPT":
                recipients.append(line.split(":", 1)[1].strip(" <>"))
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 go on")
                data = b""
                while (chunk := self.rfile.readline()) != b".\r\n":
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                self.server.messages.append(email.message_from_bytes(data, policy=email.policy.default))
                self.server.envelopes.append((sender, recipients))
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 OK")


class HTTPReceiver(ThreadingHTTPServer):
    """A real HTTP server answering POSTs with `status`, keeping each body it receives."""

    def __init__(self):
        self.status, self.posts = 500, []
        super().__init__(("127.0.0.1", free_port()), HookHandler)
        self.url = f"http://127.0.0.1:{self.server_port}/tim-alerts"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class HookHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.server.status == 200:
            self.server.posts.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _wait(condition, timeout_s: float = 90.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_urgent_alerts_reach_staff_through_both_channels_and_the_queue(tmp_path):
    db = tmp_path / "school.sqlite"
    accounts = Accounts(db)
    for name, role, password in [("amy", "student", "pencil42"), ("lee", "staff", "teacher1")]:
        accounts.add(name, role, password)
    key = accounts.new_api_key("amy")
    smtp_port = free_port()  # nothing listens there yet: the relay is down
    hook = HTTPReceiver()  # answers 500 until told otherwise
    cfg = ServeConfig(backend="openai", base_url=[f"http://127.0.0.1:{free_port()}"], adapter="", port=free_port(),
                      transcripts_db=str(db), backend_retries=0, alert_smtp_host="127.0.0.1", alert_smtp_port=smtp_port,
                      alert_from="tim@school.example", alert_to=["dsl@school.example", "deputy@school.example"],
                      alert_url=hook.url, alert_staff_url="https://tim.school.lan/", alert_retry_seconds=0.3)  # fmt: skip
    server = launch(cfg, block=False)
    smtp = None
    try:
        headers = {"Authorization": f"Bearer {key}"}
        for text in (URGENT, CONCERN, "what is 7 times 8?"):
            httpx.post(f"{server.url}/v1/chat/completions", headers=headers, timeout=60,
                       json={"model": "tim", "messages": [{"role": "user", "content": text}]})  # fmt: skip
        store = Transcripts(db)
        urgent_chat = store.student_chats("amy")[-1]["id"]  # oldest: the first message's chat
        lee = Client(server.url + "/", auth=("lee", "teacher1"), verbose=False)
        _wait(lambda: all(d["attempts"] >= 2 for d in store.deliveries(1)))  # tried, failed, tried again
        summary, table = lee.predict(api_name="/staff_attention")
        rows = table["data"]
        assert [(r[0], r[1], r[2]) for r in rows] == [(1, "urgent", "amy"), (2, "concern", "amy")]  # ordinary: none
        assert rows[0][3] == urgent_chat and rows[0][4] == "self_harm"
        assert "NOT SENT after" in rows[0][6] and "HTTP 500" in rows[0][6] and "Connection refused" in rows[0][6]
        assert rows[1][6] == ""  # a concern is queued, not sent
        assert "1 urgent" in summary and "1 concern" in summary and "could not be sent" in summary

        # The relay and the URL come back: the alert goes out on its next try, once.
        smtp, hook.status = SMTPReceiver(smtp_port), 200
        _wait(lambda: smtp.messages and hook.posts)
        time.sleep(1.0)  # several retry periods: nothing is sent twice
        assert len(smtp.messages) == 1 and len(hook.posts) == 1
        mail = smtp.messages[0]
        assert smtp.envelopes == [("tim@school.example", ["dsl@school.example", "deputy@school.example"])]
        assert mail["Subject"] == "Tim: urgent safeguarding alert 1 (self harm)"
        body = mail.get_content()
        assert "Student: amy" in body and f"Chat: {urgent_chat}" in body and "https://tim.school.lan/" in body
        assert "kill" not in body  # the message stays on the school's server
        path, content_type, posted = hook.posts[0]
        assert path == "/tim-alerts" and content_type == "application/json"
        assert {k: posted[k] for k in ("alert_id", "tier", "categories", "student", "chat_id")} == {
            "alert_id": 1, "tier": "urgent", "categories": ["self_harm"], "student": "amy", "chat_id": urgent_chat}
        assert "kill" not in json.dumps(posted)
        summary, table = lee.predict(api_name="/staff_attention")
        assert "could not be sent" not in summary
        assert "email: sent" in table["data"][0][6] and "url: sent" in table["data"][0][6]

        # Students neither see the queue nor acknowledge.
        amy = Client(server.url + "/", auth=("amy", "pencil42"), verbose=False)
        with pytest.raises(Exception, match="Only staff"):
            amy.predict(api_name="/staff_attention")
        with pytest.raises(Exception, match="Only staff"):
            amy.predict(1, "done", api_name="/staff_acknowledge")
        # An acknowledgement says what was done; then the alert leaves the queue.
        with pytest.raises(Exception, match="a note of what was done"):
            lee.predict(1, "  ", api_name="/staff_acknowledge")
        summary, table = lee.predict(1, "talked with amy and her head of year; parents called", api_name="/staff_acknowledge")
        assert [r[0] for r in table["data"]] == [2] and "0 urgent" in summary
        with pytest.raises(Exception, match="No open alert 1"):
            lee.predict(1, "again", api_name="/staff_acknowledge")
    finally:
        server.close()
        hook.shutdown()
        if smtp is not None:
            smtp.shutdown()
    audit = [(a["staff"], a["action"], a["target"]) for a in Transcripts(db).audit_log()]
    assert ("lee", "acknowledge", "alert:1") in audit and ("amy", "refused:list", "attention") in audit
    assert ("amy", "refused:acknowledge", "alert:1") in audit


def test_an_alert_is_stored_with_its_message_or_not_at_all(tmp_path):
    """The alert and its deliveries are written in the message's own transaction; a failed
    write leaves neither. An alert owed when the server stopped is sent by the next one."""
    broken = Transcripts(tmp_path / "t.sqlite", alert_channels=("url", "url"))  # the second delivery row fails
    chat = broken.start_chat("amy")
    with pytest.raises(TranscriptsError):
        broken.add_message(chat, "user", URGENT, ("self_harm",), safeguarding={"tier": "urgent"})
    assert broken.history(chat) == [] and broken.attention(staff="lee") == []  # neither message nor alert
    broken.close()
    store = Transcripts(tmp_path / "t.sqlite", alert_channels=("url",))
    store.add_message(chat, "user", URGENT, ("self_harm",), safeguarding={"tier": "urgent"})
    assert [a["id"] for a in store.attention(staff="lee")] == [1] and len(store.due_deliveries(time.time())) == 1
    # A second urgent message from amy within 10 minutes, in a new chat: queued, no second send.
    store.add_message(store.start_chat("amy"), "user", "i mean it", ("self_harm",), safeguarding={"tier": "urgent"})
    assert len(store.attention(staff="lee")) == 2 and len(store.due_deliveries(time.time())) == 1
    hook = HTTPReceiver()
    hook.status = 200
    try:
        alerter = Alerter(AlertChannels(url=hook.url, retry_s=60), store)
        assert alerter.deliver_due() == 1 and alerter.deliver_due() == 0
        assert hook.posts[0][2]["student"] == "amy"
        # A message the database could not take is still alerted, from memory, once.
        alerter.unstored("ben", "urgent", ["sexual_abuse"])
        assert alerter.deliver_due() == 1 and alerter.deliver_due() == 0
        assert [p[2]["student"] for p in hook.posts] == ["amy", "ben"] and hook.posts[1][2]["chat_id"] == "not stored"
        assert alerter._next_try(100_000) <= time.time() + 3600  # a channel down for months still retries hourly
    finally:
        hook.shutdown()
    # Deleting the student's chats removes their alerts with them.
    store.delete_student("amy", staff="lee")
    assert store.attention(staff="lee") == []


def test_alert_settings_are_checked_at_start():
    with pytest.raises(ValueError, match="alert_to"):
        ServeConfig(alert_smtp_host="smtp.school.lan")
    with pytest.raises(ValueError, match="alert_url must start with http"):
        ServeConfig(alert_url="school.lan/alerts")
