"""OpenAI-compatible API on the same server as the browser app.

    GET  /v1/models
    POST /v1/chat/completions      {"model": "tim", "messages": [...], "stream": false|true}

Every request needs `Authorization: Bearer <key>`; keys come from `tim users key NAME` and act as
that user. Turns go through the same Tutor as the browser (limits, safeguarding, transcripts filed
under the key's owner). Tim's persona prompt always leads: a client's system messages are dropped,
so an API user cannot re-prompt Tim. A request continues a chat in the transcripts when its
earlier messages are exactly an earlier request's messages plus the reply it got; otherwise it
starts a new chat. Silence is an empty `content`. Streaming is SSE ending with `data: [DONE]`;
a failure after part of a reply is an `error` event before it.

Honoured request fields: `messages`, `stream` (true/false only), `max_tokens` /
`max_completion_tokens` (lowers the server's cap, never raises it), `stream_options.include_usage`
(a last chunk with `usage`), `n` (1 only; more is refused). Sampling (`temperature`, `top_p`,
`seed`, penalties, `stop`) and everything else are ignored: the school's configs/serve.yaml
decides how Tim samples. `usage` counts tokens with the served model's tokenizer and template;
`finish_reason` is "length" when the reply reached the token cap, "content_filter" when it is
safeguarding's fixed reply.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import OrderedDict

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from serve.accounts import Accounts
from serve.tutor import Tutor
from tutorkit.turns import Delta, Failure, Finished, Refusal, SafeguardingReply, render_text

MAX_TRACKED_CHATS = 50_000  # continuation digests kept in memory (~100 bytes each)
MAX_MESSAGES = 400  # per request: far more than the model sees (max_history_messages), far less than a flood


class _TooLarge(Exception):
    pass


async def _body(request: Request, limit: int) -> bytes:
    """The request body, read no further than `limit` bytes (whatever Content-Length claims)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def _refused(event: Refusal | Failure) -> JSONResponse:
    if isinstance(event, Failure):
        return _error(502, event.message, "server_error")
    response = _error(event.status, event.message,
                      "rate_limit_error" if event.status in (429, 503) else "invalid_request_error")  # fmt: skip
    if event.retry_after_s is not None:
        response.headers["Retry-After"] = str(event.retry_after_s)
    return response


def text_of(content) -> str:
    """Message content as text: a string, or a list of parts of which the text ones count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _digest(student: str, turns: list[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps([student, turns]).encode()).hexdigest()


def _parse(body) -> tuple[list[tuple[str, str]], str, bool, int | None]:
    """(earlier user/assistant turns, the new user message, stream, max_tokens); ValueError if bad."""
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    if len(messages) > MAX_MESSAGES:
        raise ValueError(f"'messages' holds {len(messages)} messages; at most {MAX_MESSAGES}")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise ValueError(f"messages[{i}]: 'role' must be system, user or assistant")
        if not isinstance(m.get("content"), str | list):
            raise ValueError(f"messages[{i}]: 'content' must be text")
        if m["role"] != "system":
            turns.append((m["role"], text_of(m["content"])))
    if not turns or turns[-1][0] != "user":
        raise ValueError("the last message must be the student's (role 'user')")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError("'max_tokens' must be a whole number >= 1")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):  # "no" is truthy: a client that sent it must not get a stream
        raise ValueError("'stream' must be true or false")
    if body.get("n", 1) != 1:
        raise ValueError("'n' must be 1: Tim gives one reply per turn")
    return turns[:-1], turns[-1][1], stream, max_tokens


def _finish_reason(finished: Finished | None, filtered: bool) -> str:
    """OpenAI's finish_reason: "content_filter" when safeguarding's fixed reply stood in for the
    model's, "length" at the token cap, else "stop"."""
    if filtered:
        return "content_filter"
    return finished.reason if finished else "stop"


def _usage(finished: Finished | None) -> dict:
    """Token counts of the turn; zero where the model was not asked (safeguarding, silence)."""
    prompt, completion = (finished.prompt_tokens, finished.completion_tokens) if finished else (0, 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def make_router(tutor: Tutor, accounts: Accounts, model_name: str, max_request_bytes: int) -> APIRouter:
    router = APIRouter(prefix="/v1")
    chats: OrderedDict[str, int] = OrderedDict()  # digest of (student, turns so far) -> chat id

    def user_of(request: Request) -> tuple[str, str] | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        return accounts.user_for_key(key.strip()) if scheme.lower() == "bearer" and key.strip() else None

    @router.get("/models")
    async def models(request: Request):
        if user_of(request) is None:
            return _error(401, "missing or unknown API key (Authorization: Bearer <key from `tim users key NAME`>)",
                          "authentication_error")  # fmt: skip
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "tim"}]}

    @router.post("/chat/completions")
    async def chat_completions(request: Request):
        user = user_of(request)
        if user is None:
            return _error(401, "missing or unknown API key (Authorization: Bearer <key from `tim users key NAME`>)",
                          "authentication_error")  # fmt: skip
        student = user[0]
        try:
            body_options = json.loads(await _body(request, max_request_bytes))
            earlier, message, stream, max_tokens = _parse(body_options)
        except _TooLarge:
            return _error(413, f"the request body is larger than {max_request_bytes // 1024} KiB")
        except json.JSONDecodeError as e:
            return _error(400, f"bad request: the body is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})")
        except (ValueError, UnicodeDecodeError) as e:
            return _error(400, f"bad request: {e}")
        key = _digest(student, earlier)
        chat_id = await tutor.chat_for(student, chats.pop(key, None))
        history = [{"role": r, "content": c} for r, c in earlier]
        events = tutor.respond(student, chat_id, message, history, max_tokens)
        first = await anext(events)
        if isinstance(first, (Refusal, Failure)):
            return _refused(first)

        def remember(reply: str) -> None:
            chats[_digest(student, [*earlier, ("user", message), ("assistant", reply)])] = chat_id
            while len(chats) > MAX_TRACKED_CHATS:
                chats.popitem(last=False)

        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if not stream:
            turn = [first, *[event async for event in events]]
            failed = next((e for e in turn if isinstance(e, Failure)), None)
            if failed is not None:
                return _refused(failed)
            reply = render_text(turn)  # silence is an empty content
            remember(reply)
            finished = next((e for e in turn if isinstance(e, Finished)), None)
            filtered = any(isinstance(e, SafeguardingReply) for e in turn)
            return {
                "id": completion_id, "object": "chat.completion", "created": created, "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                             "finish_reason": _finish_reason(finished, filtered)}],
                "usage": _usage(finished),
            }  # fmt: skip

        def chunk(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> str:
            body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model_name,
                    "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
            if usage is not None:
                body["usage"] = usage
            return f"data: {json.dumps(body)}\n\n"

        options = body_options.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True

        async def sse():
            sent, finished, filtered = "", None, False
            try:
                yield chunk({"role": "assistant", "content": ""})
                event = first
                while event is not None:
                    if isinstance(event, (Delta, SafeguardingReply)):
                        yield chunk({"content": event.text})
                        sent += event.text
                        filtered |= isinstance(event, SafeguardingReply)
                    elif isinstance(event, Finished):
                        finished = event
                    elif isinstance(event, Failure):  # after part of the reply: the stream says so and ends
                        error = {"message": event.message, "type": "server_error", "code": 502}
                        yield f"data: {json.dumps({'error': error})}\n\n"
                        yield "data: [DONE]\n\n"
                        return
                    event = await anext(events, None)
            finally:  # a client that leaves mid-reply: the turn is stored as stopped, now
                await events.aclose()
            remember(sent)
            yield chunk({}, _finish_reason(finished, filtered))
            if include_usage:  # as OpenAI sends it: one more chunk, no choices, the usage
                yield chunk(None, usage=_usage(finished))
            yield "data: [DONE]\n\n"

        # A proxy in front (nginx) must pass each chunk on as it comes, not buffer the reply.
        return StreamingResponse(sse(), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"})

    return router
