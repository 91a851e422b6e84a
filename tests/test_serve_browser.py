"""A real headless Chromium (Debian's `chromium`, driven by Playwright) logs in as a student,
chats with Tim; a staff member logs in and lists the chats; and every request either page made
went to the app's own origin: no CDN, no web fonts, no analytics. The staff tab stays hidden
from the student."""

from __future__ import annotations

import os
import shutil
from urllib.parse import urlsplit

import pytest

from conftest import free_port
from serve.accounts import Accounts
from serve.app import launch
from serve.config import ServeConfig

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium's own background traffic (updates, sync, safe browsing) is not the page's: switched off
# so that what is recorded is what the app asks for.
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def login(page, url: str, name: str, password: str) -> None:
    page.goto(url + "/", wait_until="load")
    page.get_by_label("username").fill(name)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    page.get_by_placeholder("Type a message...").wait_for(timeout=60_000)


@pytest.mark.skipif(os.environ.get("TIM_SKIP_BROWSER") == "1", reason="TIM_SKIP_BROWSER=1")
def test_student_chats_in_chromium_and_nothing_leaves_the_server(trained_adapter, tmp_path):
    from playwright.sync_api import sync_playwright

    if CHROMIUM is None:
        pytest.fail("Debian chromium is not installed: run scripts/setup_env.sh --browser (as root), "
                    "or set TIM_SKIP_BROWSER=1 to skip this test")  # fmt: skip

    db = tmp_path / "school.sqlite"
    accounts = Accounts(db)
    accounts.add("amy", "student", "pencil42")
    accounts.add("lee", "staff", "teacher1")
    cfg = ServeConfig(adapter=str(trained_adapter), backend="transformers", port=free_port(), transcripts_db=str(db),
                      max_new_tokens=16)  # fmt: skip
    server = launch(cfg, block=False)
    requests: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            login(page, server.url, "amy", "pencil42")
            assert page.get_by_role("tab", name="Staff").count() == 0  # the staff page is hidden
            page.get_by_placeholder("Type a message...").fill("Can you help me with fractions?")
            page.get_by_test_id("submit-button").click()
            page.wait_for_function(
                "() => { const b = document.querySelectorAll('[data-testid=\"bot\"]'); "
                "return b.length && b[b.length - 1].innerText.trim().length > 0; }",
                timeout=120_000,
            )
            staff_page = browser.new_context().new_page()
            staff_page.on("request", lambda r: requests.append(r.url))
            login(staff_page, server.url, "lee", "teacher1")
            staff_page.get_by_role("tab", name="Staff").click()
            staff_page.get_by_role("button", name="List chats").click()
            staff_page.get_by_text("amy", exact=True).filter(visible=True).first.wait_for(timeout=30_000)
            browser.close()
    finally:
        server.close()
    origin = urlsplit(server.url)
    outside = [u for u in requests if not u.startswith(("data:", "blob:")) and urlsplit(u).netloc != origin.netloc]
    assert requests and not outside, f"requests left the server: {outside}"
    from serve.transcripts import Transcripts

    (chat,) = Transcripts(db).chats(staff="test")
    assert chat["student"] == "amy" and chat["messages"] == 2
