"""The serving database while staff work, through real processes: `tim serve` (the embedded model,
in its own process) takes chats from two students while `tim users …`, `tim transcripts …` and
`sqlite3 .backup` run as their own processes; then the server is killed with -9. Every
acknowledged message must be on disk, and every account change must apply to the next request."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from conftest import ROOT, free_port, wait_until_serving
from tutorkit.safeguarding import load_safeguard

TIM = str(Path(sys.executable).parent / "tim")
DISCLOSURE = "i want to kill myself"


def _cli(db: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([TIM, *args, "--db", str(db)], input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, f"tim {' '.join(args)}: {r.stderr}"
    return r


def _login(url: str, name: str, password: str) -> httpx.Response:
    return httpx.post(f"{url}/login", data={"username": name, "password": password}, timeout=60)


def _deleted_files(pid: int, db: Path) -> list[str]:
    """The database files the server holds open that no longer have a name (a journal another
    process deleted)."""
    names = [str(fd.readlink()) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    return [name for name in names if name.startswith(str(db)) and name.endswith("(deleted)")]


class Student(threading.Thread):
    """Chats over the API until told to stop: ordinary messages and a disclosure now and then.
    `acknowledged` holds (message, reply) for each 200."""

    def __init__(self, url: str, name: str, key: str):
        super().__init__(daemon=True)
        self.url, self.name, self.key = url, name, key
        self.acknowledged: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {self.key}"}) as client:
            while not self.stop.is_set():
                n += 1
                text = DISCLOSURE if n % 3 == 0 else f"{self.name} question {n}: what is {n} times 7?"
                r = client.post(f"{self.url}/v1/chat/completions",
                                json={"model": "tim", "messages": [{"role": "user", "content": text}]})  # fmt: skip
                if r.status_code == 200:
                    self.acknowledged.append((text, r.json()["choices"][0]["message"]["content"]))
                else:
                    self.errors.append(f"{r.status_code} {r.text[:200]}")


def test_admin_commands_while_serving_lose_nothing_and_apply_at_once(tmp_path):
    db = tmp_path / "school.sqlite"
    for name, role, password in [("lee", "staff", "teacher1"), ("amy", "student", "pencil42"),
                                 ("ben", "student", "eraser42"), ("carl", "student", "crayon42")]:  # fmt: skip
        _cli(db, "users", "add", name, "--role", role, "--password_stdin", "true", stdin=password + "\n")
    keys = {name: _cli(db, "users", "key", name).stdout.strip() for name in ("amy", "ben")}
    port, log = free_port(), tmp_path / "serve.log"
    server = subprocess.Popen(
        [TIM, "serve", "--config", "configs/serve.yaml", "--backend", "transformers", "--adapter", "",
         "--transcripts_db", str(db), "--port", str(port), "--max_new_tokens", "8", "--messages_per_minute", "1000"],
        cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    students = [Student(url, name, key) for name, key in keys.items()]
    try:
        wait_until_serving(f"{url}/v1/models", 401, server, log)
        amy_before = _login(url, "amy", "pencil42").cookies
        ben_before = _login(url, "ben", "eraser42").cookies
        assert httpx.get(f"{url}/staff/export?student=amy", cookies=ben_before).status_code == 403
        for student in students:
            student.start()

        # Staff at work, each command its own process, while the students chat.
        assert _cli(db, "users", "list").stdout.split()[:2] == ["lee", "staff"]
        _cli(db, "users", "add", "fay", "--role", "student", "--password_stdin", "true", stdin="ruler123\n")
        _cli(db, "users", "passwd", "amy", "--password_stdin", "true", stdin="newpencil7\n")
        _cli(db, "users", "role", "ben", "--role", "staff")
        roster = tmp_path / "roster.csv"
        roster.write_text("name,role\ndan,student\neve,student\n")
        _cli(db, "users", "import", str(roster), "--passwords_out", str(tmp_path / "passwords.csv"))
        _cli(db, "users", "remove", "carl")
        acknowledged_before_export = list(students[0].acknowledged)
        exported = json.loads(_cli(db, "transcripts", "export", "amy").stdout)
        _cli(db, "transcripts", "purge", "--retention_days", "365")
        acknowledged_before_backup = list(students[0].acknowledged)
        _cli(db, "transcripts", "backup", str(tmp_path / "tim-backup.sqlite"))
        if shutil.which("sqlite3"):
            subprocess.run(["sqlite3", str(db), f".backup {tmp_path / 'sqlite3-backup.sqlite'}"], check=True, timeout=60)
        else:  # the same online backup API the sqlite3 shell's .backup uses, from another process
            subprocess.run([sys.executable, "-c", "import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup("
                            "sqlite3.connect(sys.argv[2]))", str(db), str(tmp_path / "sqlite3-backup.sqlite")],
                           check=True, timeout=60)  # fmt: skip
        assert _deleted_files(server.pid, db) == [], "the server writes into a journal no other process sees"

        # Every change applies to the next request.
        assert _login(url, "amy", "pencil42").status_code == 401  # the old password
        assert _login(url, "amy", "newpencil7").status_code == 200  # the new one, at once
        assert httpx.get(f"{url}/", cookies=amy_before, follow_redirects=False).status_code == 303  # old cookie: out
        assert httpx.get(f"{url}/staff/export?student=amy", cookies=ben_before).status_code == 401  # role change ends it
        ben_now = _login(url, "ben", "eraser42").cookies
        assert httpx.get(f"{url}/staff/export?student=amy", cookies=ben_now).status_code == 200  # staff now
        assert _login(url, "fay", "ruler123").status_code == 200  # a new account
        dan_password = (tmp_path / "passwords.csv").read_text().splitlines()[1].split(",")[2]
        assert _login(url, "dan", dan_password).status_code == 200  # an imported one
        assert _login(url, "carl", "crayon42").status_code == 401  # a removed one
        assert httpx.get(f"{url}/health").json()["database"] == "ok"
        for student in students:  # a few more turns after all that, then the kill
            deadline = time.monotonic() + 300
            while len(student.acknowledged) < 6 and not student.errors and time.monotonic() < deadline:
                time.sleep(0.5)
            student.stop.set()
            student.join(timeout=120)
    finally:
        for student in students:
            student.stop.set()
        server.kill()  # -9: nothing is flushed or checkpointed on the way out
        server.wait()

    for student in students:
        assert student.errors == [] and len(student.acknowledged) >= 6, (student.errors, log.read_text()[-2000:])
    stored = sqlite3.connect(db).execute(
        "SELECT c.student, m.role, m.content FROM messages m JOIN chats c ON c.id = m.chat_id ORDER BY m.id"
    ).fetchall()
    fixed = load_safeguard("configs/safeguarding.yaml").assess(DISCLOSURE).response
    for student in students:
        theirs = [(role, content) for name, role, content in stored if name == student.name]
        for message, reply in student.acknowledged:
            assert ("user", message) in theirs and ("assistant", reply) in theirs, f"{student.name}: {message!r} lost"
        disclosures = [reply for message, reply in student.acknowledged if message == DISCLOSURE]
        assert disclosures and set(disclosures) == {fixed}
        assert sum(content == DISCLOSURE for role, content in theirs) >= len(disclosures)
    exported_texts = [m["content"] for chat in exported["chats"] for m in chat["messages"]]
    assert all(message in exported_texts for message, _ in acknowledged_before_export)
    for copy in ("tim-backup.sqlite", "sqlite3-backup.sqlite"):
        saved = {row[0] for row in sqlite3.connect(tmp_path / copy).execute("SELECT content FROM messages")}
        assert all(message in saved for message, _ in acknowledged_before_backup), copy


def test_a_database_file_replaced_while_serving_is_never_written_and_health_says_so(tmp_path):
    """The file deleted and made again under the same name (here by `tim users add`) while the
    server runs: the server's writes would go to the old file nobody else sees. A message is
    refused (503), a disclosure still gets its reply, a login is refused, /health says down."""
    from serve.app import launch
    from serve.config import ServeConfig

    db = tmp_path / "school.sqlite"
    _cli(db, "users", "add", "amy", "--role", "student", "--password_stdin", "true", stdin="pencil42\n")
    key = _cli(db, "users", "key", "amy").stdout.strip()
    cfg = ServeConfig(backend="openai", base_url=[f"http://127.0.0.1:{free_port()}"], adapter="", port=free_port(),
                      transcripts_db=str(db), backend_retries=0)  # fmt: skip
    server = launch(cfg, block=False)

    def ask(text):
        return httpx.post(f"{server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=120,
                          json={"model": "tim", "messages": [{"role": "user", "content": text}]})  # fmt: skip

    try:
        assert ask("what is a verb?").status_code == 502  # no model here: stored, then failed
        assert httpx.get(f"{server.url}/health").json()["database"] == "ok"
        for file in tmp_path.glob("school.sqlite*"):
            file.unlink()
        _cli(db, "users", "add", "amy", "--role", "student", "--password_stdin", "true", stdin="pencil42\n")
        assert httpx.get(f"{server.url}/health").json()["database"] == "down"
        r = ask("what is a noun?")
        assert r.status_code == 503 and "can't save" in r.json()["error"]["message"]
        r = ask(DISCLOSURE)
        fixed = load_safeguard("configs/safeguarding.yaml").assess(DISCLOSURE).response
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == fixed
        assert _login(server.url, "amy", "pencil42").status_code == 503
    finally:
        server.close()
