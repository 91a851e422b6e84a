"""Browser sessions, outside Gradio: the login page, the session cookie, logout, and the staff
download that must not exist as a file.

    GET  /login, POST /login (form: username, password)   a session cookie on success
    GET  /logout                                          the session ends, back to /login
    GET  /staff/export?student=NAME                       that student's chats as JSON (staff only)

The Gradio app asks `user_of(request)` (its auth_dependency) on every request, and so does the
API-free part here: a session counts while its account exists with the same epoch (password,
role, removal) and it is younger than `session_hours`. Passwords are checked off the event loop
(argon2id is slow on purpose), and failed logins are throttled per name and per client address,
so guessing is slow and one class logging in does not stall everyone's replies.
"""

from __future__ import annotations

import html
import re
import time
from collections import defaultdict, deque

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from serve.accounts import Accounts
from serve.database import DatabaseError
from serve.transcripts import Transcripts

COOKIE = "tim_session"


class Throttle:
    """Failed logins per key in `window_s`: at most `limits["name"]` for one user name and
    `limits["client"]` for one client address (higher: a class can sit behind one proxy or NAT
    address); beyond that, tries are refused unchecked until the oldest failure leaves the window."""

    def __init__(self, limits: dict[str, int] | None = None, window_s: float = 300.0):
        self.limits = limits or {"name": 5, "client": 30}
        self.window_s = window_s
        self._failures: dict[tuple[str, str], deque[float]] = defaultdict(deque)

    def wait_s(self, keys: list[tuple[str, str]]) -> int:
        now, wait = time.monotonic(), 0.0
        for key in keys:
            failures = self._failures[key]
            while failures and now - failures[0] > self.window_s:
                failures.popleft()
            if len(failures) >= self.limits[key[0]]:
                wait = max(wait, self.window_s - (now - failures[0]))
        return int(wait) + 1 if wait else 0

    def failed(self, keys: list[tuple[str, str]]) -> None:
        for key in keys:
            self._failures[key].append(time.monotonic())


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">{head}
<style>body{{font-family:system-ui,sans-serif;max-width:24rem;margin:4rem auto;padding:0 1rem}}
label,input,button{{display:block;width:100%;margin:.4rem 0;font-size:1rem}}input{{padding:.5rem}}
button{{padding:.6rem}}.error{{color:#b00020}}</style></head><body><h1>{title}</h1><p>{note}</p>{body}</body></html>"""
_FORM = """<p class="error">{error}</p><form method="post" action="/login">
<label for="username">username</label><input id="username" name="username" autocomplete="username" required>
<label for="password">password</label><input id="password" name="password" type="password"
 autocomplete="current-password" required><button type="submit">Login</button></form>"""


def make_router(accounts: Accounts, transcripts: Transcripts, tutor_name: str, note: str, session_hours: float):
    """The routes above, and `user_of(request) -> name | None` for the Gradio app."""
    router = APIRouter()
    lifetime_s = session_hours * 3600
    throttle = Throttle()

    def page(body: str, status: int = 200, head: str = "") -> HTMLResponse:
        return HTMLResponse(_PAGE.format(title=html.escape(tutor_name), note=html.escape(note), body=body, head=head),
                            status_code=status)  # fmt: skip

    def user_of(request: Request) -> str | None:
        user = accounts.session_user(request.cookies.get(COOKIE, ""), lifetime_s)
        return user[0] if user else None

    @router.get("/login")
    async def login_form():
        return page(_FORM.format(error=""))

    @router.post("/login")
    async def login(request: Request):
        form = await request.form()
        name, password = str(form.get("username", "")).strip(), str(form.get("password", ""))
        keys = [("name", name), ("client", request.client.host if request.client else "?")]
        wait = throttle.wait_s(keys)
        if wait:
            response = page(_FORM.format(error=f"Too many tries. Wait {wait} seconds, or ask your teacher."), 429)
            response.headers["Retry-After"] = str(wait)
            return response
        role = await run_in_threadpool(accounts.verify, name, password)
        if role is None:
            throttle.failed(keys)
            return page(_FORM.format(error="That name and password do not match."), 401)
        try:
            token = accounts.open_session(name)
        except DatabaseError:  # the file replaced or gone while serving: /health says so too
            return page(_FORM.format(error="Logging in does not work right now. Please tell your teacher."), 503)
        # 200 with a refresh rather than a redirect: scripted clients (gradio_client) read the
        # cookie from this response and count only 2xx as logged in.
        response = page('<p><a href="/">Continue</a></p>', head='<meta http-equiv="refresh" content="0; url=/">')
        response.set_cookie(COOKIE, token, max_age=int(lifetime_s), httponly=True, samesite="lax",
                            secure=request.url.scheme == "https", path="/")  # fmt: skip
        return response

    @router.get("/logout")
    async def logout(request: Request):
        accounts.close_session(request.cookies.get(COOKIE, ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @router.get("/staff/export")
    async def export(request: Request, student: str = ""):
        viewer = user_of(request)
        if viewer is None:
            return JSONResponse({"error": "log in first"}, status_code=401)
        if accounts.role(viewer) != "staff":
            await transcripts.run(transcripts.audit, viewer, "refused:export", f"student:{student}")
            return JSONResponse({"error": "staff only"}, status_code=403)
        if not student:
            return JSONResponse({"error": "which student? ?student=NAME"}, status_code=400)
        body = await transcripts.run(transcripts.export_student, student, viewer)  # audited there
        filename = re.sub(r"[^A-Za-z0-9._-]", "_", student)[:64] + "-chats.json"
        return Response(body, media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})  # fmt: skip

    return router, user_of
