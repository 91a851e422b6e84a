"""The browser app (Gradio): a Chat tab for everyone, "My chats" (a student's own transcripts),
and a Staff tab (the "Needs attention" queue of urgent and concern messages, acknowledged with a
note; every chat, flagged first; search; view; export and delete per student) that only staff
accounts see. Every staff handler checks the role on the server, not only the tab's
visibility, and every staff view, export, delete and acknowledgement lands in the audit log.
"""

from __future__ import annotations

import contextlib
import datetime
import html
import urllib.parse
from collections.abc import AsyncIterator

import gradio as gr

from serve.accounts import Accounts
from serve.tutor import Tutor
from tutorkit.turns import Delta, Failure, Refusal, SafeguardingReply, Silence

LOCAL_USER = "local"  # the one user of a server started with require_login false (loopback only)


def _shown(message: str, title: str = "Error") -> gr.Error:
    """An error the user reads in the page. Expected (a refusal, a wrong chat number), so not
    printed as a traceback in the server's log: the tutor logs real failures in one line."""
    return gr.Error(message, title=title, print_exception=False)


def staff_note(tutor_name: str) -> str:
    return f"{tutor_name} is a tutor. Your teachers and school staff can read these chats."


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


def _stored_text(m: dict, tutor_name: str) -> str:
    """A stored message as staff and students read it, with how Tim's reply ended: HTML, the
    message's own text escaped (shown as typed: no Markdown, HTML, links or remote images)."""
    text, ending = html.escape(m["content"]), m.get("ending", "complete")

    def note(words: str) -> str:
        return f"<em>({html.escape(words)})</em>"

    if ending == "silent":
        return note(f"{tutor_name} stayed quiet")
    if ending == "failed":
        return (text + "\n\n" if text else "") + note("no reply: the model failed")
    if ending == "stopped":
        return (text + " " if text else "") + note("stopped before the end")
    if ending == "refused":
        return note(f"not answered: {m['content']}")
    return text or note("empty")


def _flags(m: dict) -> str:
    """What safeguarding found in a message, for staff only: tier, layer, categories."""
    sg = m.get("safeguarding") or {}
    tier = f"{sg['tier']} ({sg.get('layer') or 'abuse rules'}): " if sg.get("tier") not in (None, "none") else ""
    return f" — ⚠ {tier}{', '.join(m['flags'])}" if m["flags"] else ""


def _delivery_state(deliveries: list[dict]) -> str:
    """How an urgent alert's sending went, per channel ('' for a concern: it is not sent)."""
    parts = []
    for d in deliveries:
        if d["delivered_at"]:
            parts.append(f"{d['channel']}: sent {_when(d['delivered_at'])}")
        else:
            tried = f" after {d['attempts']} tries: {d['last_error']}" if d["attempts"] else " yet"
            parts.append(f"{d['channel']}: ⚠ NOT SENT{tried}")
    return "; ".join(parts)


def _attention_summary(alerts: list[dict], undelivered: int) -> str:
    urgent = sum(a["tier"] == "urgent" for a in alerts)
    line = f"**{urgent} urgent**, {len(alerts) - urgent} concern waiting."
    if undelivered:
        line += f" ⚠ **{undelivered} alert message(s) could not be sent yet** (retried until they are): see 'alerts sent'."
    return line


def _as_html(messages: list[dict], tutor_name: str, staff: bool) -> str:
    """A chat for the "My chats" and staff views. Who spoke and when is the app's markup; what was
    said is escaped text, so a student cannot forge a turn, a link or an image in staff's view."""
    turns = []
    for m in messages:
        who = "Student" if m["role"] == "user" else tutor_name
        flags = html.escape(_flags(m)) if staff else ""  # students never see what safeguarding found
        turns.append(f'<div class="tim-turn"><strong>{html.escape(who)}</strong> · {_when(m["created_at"])}{flags}'
                     f'<div style="white-space: pre-wrap">{_stored_text(m, tutor_name)}</div></div>')  # fmt: skip
    return "<hr>".join(turns) or "<em>(no messages)</em>"


def build_ui(tutor: Tutor, accounts: Accounts, login: bool) -> gr.Blocks:
    tutor_name = tutor.persona.name
    # (user, browser session) -> chat in the transcripts. Keyed by the user too: a session hash
    # is sent by the browser, so another user's hash must not reach that user's chat.
    chat_ids: dict[tuple[str, str], int] = {}

    def who(request: gr.Request) -> tuple[str, str]:
        """(user, role) of the request; without login, the local user is staff (the operator)."""
        if not login:
            return LOCAL_USER, "staff"
        name = getattr(request, "username", None)
        role = accounts.role(name) if name else None
        if role is None:
            raise _shown("Please log in again.")
        return name, role

    def staff_only(request: gr.Request, action: str, target: str = "") -> str:
        name, role = who(request)
        if role != "staff":
            tutor.transcripts.audit(name, f"refused:{action}", target)  # a student trying is worth knowing
            raise _shown("Only staff accounts can do this.")
        return name

    async def reply(message: str, history: list[dict], request: gr.Request) -> AsyncIterator[str]:
        """The turn rendered for the chat window. What the model sees as the chat so far comes
        from the transcripts, never from the page (whose history the browser controls)."""
        student, _ = who(request)
        session = (student, request.session_hash or LOCAL_USER)
        # A new or cleared chat starts a chat; so does one that staff deleted meanwhile.
        chat_ids[session] = await tutor.chat_for(student, chat_ids.get(session) if history else None)
        text = ""
        # aclosing: the stop button closes this generator, and the turn must learn it at once.
        async with contextlib.aclosing(tutor.respond(student, chat_ids[session], message)) as events:
            async for event in events:
                if isinstance(event, Delta):
                    text += event.text
                    yield text
                elif isinstance(event, SafeguardingReply):
                    yield event.text
                elif isinstance(event, Silence):
                    yield f"*({tutor_name} stays quiet.)*"
                elif isinstance(event, Refusal):
                    raise _shown(event.message, title="Not sent")
                elif isinstance(event, Failure):
                    raise _shown(event.message, title="No reply")

    def my_chats(request: gr.Request):
        student, _ = who(request)
        chats = tutor.transcripts.student_chats(student)
        choices = [(f"{_when(c['started_at'])} · {c['messages']} messages", c["id"]) for c in chats]
        return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)

    def show_my_chat(chat_id, request: gr.Request) -> str:
        student, _ = who(request)
        if chat_id is None:
            return ""
        try:
            return _as_html(tutor.transcripts.messages(int(chat_id), viewer=student, staff=False), tutor_name, False)
        except PermissionError:
            raise _shown("That chat is not yours.") from None

    def list_chats(search: str, request: gr.Request):
        staff = staff_only(request, "list", search)
        rows = [
            [c["id"], c["student"], _when(c["started_at"]), "⚠ yes" if c["flagged"] else "", c["messages"]]
            for c in tutor.transcripts.chats(staff=staff, search=search.strip())
        ]
        return rows

    def view_chat(chat_id, request: gr.Request) -> str:
        staff = staff_only(request, "view", f"chat:{chat_id}")
        if not chat_id:
            raise _shown("Enter a chat number from the list.")
        try:
            return _as_html(tutor.transcripts.messages(int(chat_id), viewer=staff, staff=True), tutor_name, True)
        except PermissionError:
            raise _shown(f"No chat {int(chat_id)}.") from None

    def export_student(student: str, request: gr.Request) -> str:
        """A link to the export, made when followed (serve/sessions.py): nothing is written to a
        file, and the link works only in a staff session."""
        student = student.strip()
        staff_only(request, "export", f"student:{student}")
        if not student:
            raise _shown("Enter the student's user name.")
        if not login:
            raise _shown("Exports need accounts (require_login true): use `tim transcripts export NAME` here.")
        return f"[Download {student}'s chats (JSON)](/staff/export?student={urllib.parse.quote(student)})"

    def delete_student(student: str, confirmed: bool, request: gr.Request) -> str:
        student = student.strip()
        staff = staff_only(request, "delete", f"student:{student}")
        if not student or not confirmed:
            raise _shown("Enter the student's user name and tick the box to confirm.")
        n = tutor.transcripts.delete_student(student, staff=staff)
        return f"Deleted {n} chats of {student}."

    def needs_attention(request: gr.Request):
        """The staff queue: (summary, rows) of alerts not yet acknowledged, urgent first, newest first."""
        staff = staff_only(request, "list", "attention")
        alerts = tutor.transcripts.attention(staff=staff)
        rows = [[a["id"], a["tier"], a["student"], a["chat_id"], ", ".join(a["categories"]), _when(a["created_at"]),
                 _delivery_state(a["deliveries"])] for a in alerts]  # fmt: skip
        return _attention_summary(alerts, tutor.transcripts.undelivered()), rows

    def acknowledge(alert_no, note: str, request: gr.Request):
        staff = staff_only(request, "acknowledge", f"alert:{alert_no}")
        if not alert_no or not (note or "").strip():
            raise _shown("Enter the alert number and a note of what was done.")
        try:
            tutor.transcripts.acknowledge(int(alert_no), staff=staff, note=note)
        except KeyError:
            raise _shown(f"No open alert {int(alert_no)}.") from None
        return needs_attention(request)

    def on_load(request: gr.Request):
        """The Staff tab, with its queue filled, for staff only."""
        _, role = who(request)
        if role != "staff":
            return gr.Tab(visible=False), "", []
        return gr.Tab(visible=True), *needs_attention(request)

    with gr.Blocks(title=tutor_name, analytics_enabled=False, fill_height=True) as ui:
        if login:
            gr.Button("Log out", link="/logout", size="sm", scale=0)
        with gr.Tab("Chat"):
            gr.ChatInterface(
                reply,
                title=tutor_name,
                description=staff_note(tutor_name),
                analytics_enabled=False,
                flagging_mode="never",
                fill_height=True,
                api_name="chat",
                # Tutor.respond does the real limiting (slots and a bounded waiting line with a
                # clear "busy" message); Gradio's own queue must not hold turns back before it.
                concurrency_limit=tutor.limits.max_concurrent + tutor.limits.max_queue,
            )
        with gr.Tab("My chats") as mine:
            my_list = gr.Dropdown(label="Your chats", choices=[], interactive=True, allow_custom_value=True)
            my_view = gr.HTML()
            mine.select(my_chats, outputs=my_list, api_name="my_chats")
            my_list.change(show_my_chat, inputs=my_list, outputs=my_view, api_name="my_chat")
        with gr.Tab("Staff", visible=False) as staff_tab:
            gr.Markdown("**Needs attention**: messages safeguarding marked urgent or concern, urgent first. "
                        "Read the chat, act, then acknowledge the alert with a note of what was done.")
            attention_summary = gr.Markdown()
            attention = gr.Dataframe(headers=["alert", "tier", "student", "chat", "found", "when", "alerts sent"],
                                     interactive=False)  # fmt: skip
            with gr.Row():
                refresh_attention = gr.Button("Refresh", scale=1)
                alert_no = gr.Number(label="Alert number", precision=0, scale=1)
                note = gr.Textbox(label="What was done", scale=3)
                ack = gr.Button("Acknowledge", scale=1)
            gr.Markdown("Flagged chats come first. Every view, export and delete is recorded in the audit log.")
            with gr.Row():
                search = gr.Textbox(label="Search student or text", scale=4)
                refresh = gr.Button("List chats", scale=1)
            table = gr.Dataframe(headers=["chat", "student", "started", "flagged", "messages"], interactive=False)
            with gr.Row():
                chat_no = gr.Number(label="Chat number", precision=0)
                view = gr.Button("View chat")
            chat_view = gr.HTML()
            with gr.Row():
                student_name = gr.Textbox(label="Student user name")
                export = gr.Button("Export student's chats")
                confirm = gr.Checkbox(label="Yes, delete all of this student's chats")
                delete = gr.Button("Delete", variant="stop")
            export_file = gr.Markdown()
            done = gr.Markdown()
            refresh_attention.click(needs_attention, outputs=[attention_summary, attention], api_name="staff_attention")
            ack.click(acknowledge, inputs=[alert_no, note], outputs=[attention_summary, attention],
                      api_name="staff_acknowledge")  # fmt: skip
            refresh.click(list_chats, inputs=search, outputs=table, api_name="staff_chats")
            search.submit(list_chats, inputs=search, outputs=table, api_visibility="private")
            view.click(view_chat, inputs=chat_no, outputs=chat_view, api_name="staff_view")
            export.click(export_student, inputs=student_name, outputs=export_file, api_name="staff_export")
            delete.click(delete_student, inputs=[student_name, confirm], outputs=done, api_name="staff_delete")
        ui.load(on_load, outputs=[staff_tab, attention_summary, attention], api_visibility="private")
    return ui


