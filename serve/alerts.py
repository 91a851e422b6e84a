"""Staff alerts for urgent safeguarding flags, through the school's own channels: an email through
its SMTP relay and/or a JSON POST to an on-premise URL (configs/serve.yaml, alert_*).

Every urgent message gets an alert row in the transcripts in the same transaction as the
message, with one delivery per configured channel (serve/transcripts.py; none for a student
alerted within the last 10 minutes: that alert already brought staff to the chat). A thread here sends
what is due: at once when an urgent message arrives, and again for a failed delivery after
`alert_retry_seconds`, doubling up to an hour, until it succeeds. Nothing is dropped: a delivery
that fails stays on the staff page with its last error, and one still owed when the server
stops is sent when it starts again. An urgent message that could not be stored (the database
down) is still alerted, from memory, and the server's log says so.

What leaves the machine is what a safeguarding lead needs to act: the alert number, tier,
categories, student user name, chat number, time and the staff page's address. The message
itself stays on the school's server (read it on the staff page).
"""

from __future__ import annotations

import json
import os
import smtplib
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage

from serve.transcripts import Transcripts, TranscriptsError
from tutorkit import TimError

PASSWORD_ENV = "TIM_ALERT_SMTP_PASSWORD"
MAX_RETRY_S = 3600.0


@dataclass(frozen=True)
class AlertChannels:
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_user: str = ""
    sender: str = "tim@localhost"
    to: tuple[str, ...] = ()
    url: str = ""
    staff_url: str = ""
    retry_s: float = 60.0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, on in (("email", bool(self.smtp_host)), ("url", bool(self.url))) if on)


def describe(alert: dict, staff_url: str) -> tuple[str, str]:
    """(subject, body) of an alert's email."""
    found = ", ".join(c.replace("_", " ") for c in alert["categories"]) or "a safeguarding sign"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(alert["created_at"]))
    subject = f"Tim: {alert['tier']} safeguarding alert {alert['alert_id']} ({found})"
    body = (f"Tim's safeguarding marked a student's message {alert['tier']}.\n\n"
            f"Alert: {alert['alert_id']}\nStudent: {alert['student']}\nChat: {alert['chat_id']}\n"
            f"Found: {found}\nAt: {when}\n\n"
            f"Read the chat and acknowledge the alert on Tim's Staff page{': ' + staff_url if staff_url else ''}.\n"
            "The message itself is not in this email: it stays on the school's server. More urgent messages "
            "from this student in the next 10 minutes wait in the queue without an email of their own.\n")  # fmt: skip
    return subject, body


class Alerter:
    """Sends what is due on its own thread (start / wake / close); `deliver_due` does one round."""

    def __init__(self, channels: AlertChannels, transcripts: Transcripts):
        self.channels, self.transcripts = channels, transcripts
        if channels.smtp_user and PASSWORD_ENV not in os.environ:
            raise TimError(f"alert_smtp_user is set: put its password in the environment variable {PASSWORD_ENV}")
        self._wake = threading.Event()
        self._stopping = False
        self._unstored: list[dict] = []  # urgent alerts whose message could not be stored
        self._unrecorded: set[tuple[int, str]] = set()  # sent, but the database could not say so yet
        self._thread = threading.Thread(target=self._loop, name="tim-alerts", daemon=True)

    def start(self) -> Alerter:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def unstored(self, student: str, tier: str, categories: list[str]) -> None:
        """An urgent message the database could not take: alerted from memory, retried until sent."""
        alert = {"alert_id": "unstored", "tier": tier, "categories": categories, "chat_id": "not stored",
                 "student": student, "created_at": time.time()}  # fmt: skip
        for channel in self.channels.names:
            self._unstored.append(dict(alert, channel=channel, attempts=0, next_try=0.0))
        print(f"tim serve: {student}: an urgent message could not be stored; alerting from memory", file=sys.stderr,
              flush=True)  # fmt: skip
        self.wake()

    def _loop(self) -> None:
        while not self._stopping:
            try:
                self.deliver_due()
            except Exception as e:  # noqa: BLE001 - the database down, or a bug: the thread must live on
                print(f"tim serve: alerts: {e!r}; trying again in {self.channels.retry_s:g} s", file=sys.stderr, flush=True)
            self._wake.wait(timeout=self.channels.retry_s)
            self._wake.clear()

    def _next_try(self, attempts: int) -> float:
        return time.time() + min(self.channels.retry_s * 2 ** min(max(attempts - 1, 0), 16), MAX_RETRY_S)

    def deliver_due(self) -> int:
        """Try every delivery that is due; returns how many were made. Alerts held in memory go
        first: they do not need the database."""
        made = self._deliver_unstored()
        for due in self.transcripts.due_deliveries(time.time()):
            if self._stopping:
                break
            key = (due["alert_id"], due["channel"])
            error = "" if key in self._unrecorded else self.send(due["channel"], due)
            if not error:
                self._unrecorded.add(key)  # until the database has it: never sent twice meanwhile
            self.transcripts.delivery_result(due["alert_id"], due["channel"], error, self._next_try(due["attempts"] + 1))
            self._unrecorded.discard(key)
            if error:
                print(f"tim serve: alert {due['alert_id']} not sent by {due['channel']} (try {due['attempts'] + 1}; "
                      f"again later): {error}", file=sys.stderr, flush=True)  # fmt: skip
            made += not error
        return made

    def _deliver_unstored(self) -> int:
        made = 0
        for due in [d for d in self._unstored if d["next_try"] <= time.time()]:
            error = self.send(due["channel"], due)
            due["attempts"] += 1
            if error:
                due["next_try"] = self._next_try(due["attempts"])
                print(f"tim serve: alert for an unstored message not sent by {due['channel']}: {error}", file=sys.stderr,
                      flush=True)  # fmt: skip
            else:
                self._unstored.remove(due)
                made += 1
        return made

    def send(self, channel: str, alert: dict) -> str:
        """'' when sent, else what went wrong (one line)."""
        try:
            (self._email if channel == "email" else self._post)(alert)
            return ""
        except Exception as e:  # noqa: BLE001 - refused, unreachable, not HTTP, a bad reply: a failed try
            return f"{type(e).__name__}: {e}".replace("\n", " ")[:300]

    def _email(self, alert: dict) -> None:
        c = self.channels
        subject, body = describe(alert, c.staff_url)
        message = EmailMessage()
        message["Subject"], message["From"], message["To"] = subject, c.sender, ", ".join(c.to)
        message.set_content(body)
        with smtplib.SMTP(c.smtp_host, c.smtp_port, timeout=10) as smtp:
            if c.smtp_starttls:
                smtp.starttls()
            if c.smtp_user:
                smtp.login(c.smtp_user, os.environ[PASSWORD_ENV])
            smtp.send_message(message)

    def _post(self, alert: dict) -> None:
        body = {k: alert[k] for k in ("alert_id", "tier", "categories", "student", "chat_id", "created_at")}
        body["staff_url"] = self.channels.staff_url
        request = urllib.request.Request(self.channels.url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
        except urllib.error.HTTPError as e:
            raise OSError(f"HTTP {e.code} from {self.channels.url}") from None
