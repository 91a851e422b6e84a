"""Synthesis against the project's real vLLM server on the embedded model (never mocked HTTP),
with the in-process transformers fallback, and crash-safe resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from synth import synthesize
from synth.postprocess import normalize_names
from tutorkit import TimError
from tutorkit.backends import vllm_server as vllm
from tutorkit.conversation import read_conversations
from tutorkit.exemplars import load_exemplars
from tutorkit.persona import load_persona

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--turns", "2", "--tim_max_tokens", "48", "--student_max_tokens", "32", "--tim_candidates", "1"]


def _server_args(vllm_server):
    cfg, url = vllm_server
    return ["--base_url", url, "--model", cfg.served_model_name]


def _check_output(out, requested):
    report = json.loads((out / "report.json").read_text())
    assert report["requested"] == requested
    assert report["written"] + len(report["gave_up"]) == requested
    train = read_conversations(out / "train.jsonl")  # validates the schema of every row
    validation = read_conversations(out / "validation.jsonl") if report["validation"] else []
    assert len(train) == report["train"] and len(validation) == report["validation"]
    gold = [r for r in train if r["meta"]["kind"] == "exemplar"]
    assert len(gold) == report["exemplars"]["rows_in_train"]
    rows = [r for r in train + validation if r["meta"]["kind"] != "exemplar"]
    keys = [r["meta"]["key"] for r in rows]
    assert len(keys) == len(set(keys)) == report["written"] > 0
    for row in rows:
        assert row["messages"][0]["role"] == "system" and "Tim" in row["messages"][0]["content"]
        assert row["meta"]["kind"] in ("topic", "scenario") and row["meta"]["seed"] is not None
        for m in row["messages"][1:]:
            assert not m["content"].lower().startswith(("tim:", "student:", "user:"))
    return report, rows


def test_synth_through_local_vllm_server(vllm_server, tmp_path):
    cfg, _ = vllm_server
    assert vllm.status(cfg).startswith("running")
    out = tmp_path / "synth"
    synthesize.main(["--config", "configs/synth.yaml", "--output_dir", str(out), *_server_args(vllm_server),
                     "--max_conversations", "8", *SMALL, "--validation_fraction", "0.2",
                     "--exemplars_in_prompt", "1", "--exemplars_in_train", "1"])  # fmt: skip
    report, rows = _check_output(out, 8)
    assert report["backend"] == {"backend": "openai", "model": cfg.served_model_name}
    assert report["generated_tokens"] > 0
    assert {r["meta"]["kind"] for r in rows} == {"topic", "scenario"}  # the plan interleaves both
    # Every request is logged with its prompt, parameters, raw output, latency and backend.
    requests = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert len(requests) >= 2 * 2 * report["written"] - report["silent_turns"]
    for r in requests:
        assert r["backend"] == "openai" and r["messages"] and "temperature" in r["sampling"]
        assert r["latency_s"] >= 0 and (r["output"] is not None or "error" in r)
    # Gold exemplars: one of the conversation's category in both prompts, every one in train.jsonl.
    exemplars = {e.id: e for e in load_exemplars("data/exemplars.yaml")}
    assert report["exemplars"]["rows_in_train"] == len(exemplars)
    first_tim_prompt = {}
    for r in requests:
        first_tim_prompt.setdefault((r["key"], r["purpose"]), r["messages"][0]["content"])
    for row in rows:
        (shown,) = row["meta"]["exemplars_shown"]
        assert exemplars[shown].category == (row["meta"]["category"] if row["meta"]["kind"] == "scenario" else "lesson")
        tim_line = next(t for role, t in exemplars[shown].turns if role == "assistant" and t)
        student_line = exemplars[shown].turns[0][1]
        for purpose in ("tim", "student"):
            prompt = first_tim_prompt[(row["meta"]["key"], purpose)]
            assert f"Tim: {tim_line}" in prompt and f"Student: {student_line}" in prompt
    # The dataset card, as the Hub writes it: datasets loads the splits it names.
    card = (out / "README.md").read_text()
    assert "Gold exemplars" in card and "## Sample rows" in card
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "apache-2.0" and header["size_categories"] == ["n<1K"]
    import datasets

    written = {name: len(read_conversations(out / f"{name}.jsonl")) for name in ("train", "validation")}
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))  # no other run's cache
    assert {name: loaded[name].num_rows for name in loaded} == {k: n for k, n in written.items() if n}
    assert "Conversations per category" in card and "Rejected attempts per reason" in card
    for png in ("turns_per_conversation.png", "words_per_tim_turn.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_shot_transcript_mode(vllm_server, tmp_path):
    from synth.transcript import parse_transcript

    out = tmp_path / "synth"
    try:
        synthesize.main(["--config", "configs/synth.yaml", "--output_dir", str(out), *_server_args(vllm_server),
                         "--mode", "transcript", "--max_conversations", "3", "--turns", "2",
                         "--transcript_max_tokens", "200", "--max_attempts", "5", "--student_voice_fraction", "0"])  # fmt: skip
    except TimError as e:  # a 135M model may write no parseable chat at all: that must be said, not hidden
        assert "no conversation passed the gates" in str(e)
    # Every attempt is one logged completion; re-parsing its raw output must explain the outcome.
    records = [json.loads(line) for line in (out / "conversations.jsonl").read_text().splitlines()]
    requests = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert len({r["key"] for r in records}) == 3 and len(records) >= 3
    assert [r["purpose"] for r in requests] == ["transcript"] * len(records)
    for key in {r["key"] for r in records}:
        attempts = [r for r in records if r["key"] == key]
        outputs = [r["output"] for r in requests if r["key"] == key]
        assert len(attempts) == len(outputs)
        for record, output in zip(sorted(attempts, key=lambda r: r["attempt"]), outputs):
            turns, reason = parse_transcript(output, "Tim")
            if reason is not None:
                assert record["status"] == "rejected" and record["reason"] == reason
            elif record["status"] == "accepted":  # the parsed turns, Tim's names normalized, are the row
                assert [m["role"] for m in record["messages"][1:]] == [t["role"] for t in turns]
                assert [m["content"] for m in record["messages"][1:] if m["role"] == "user"] == \
                    [t["content"] for t in turns if t["role"] == "user"]  # fmt: skip
            else:
                assert record["reason"] in {"structure", "empty_turn", "role_leakage", "persona_break", "too_short",
                                            "too_long", "near_duplicate"}  # fmt: skip
    if any(r["status"] == "accepted" for r in records):
        report, _ = _check_output(out, 3)
        assert report["written"] + sum(report["rejected"].values()) == report["attempts"] == len(records)


def test_best_of_n_keeps_the_best_scored_candidate_and_writes_preference_pairs(vllm_server, tmp_path):
    out = tmp_path / "synth"
    report = synthesize.main(["--config", "configs/synth.yaml", "--output_dir", str(out), *_server_args(vllm_server),
                              "--max_conversations", "6", *SMALL, "--tim_candidates", "3", "--max_attempts", "1",
                              "--validation_fraction", "0"])  # fmt: skip
    stats = report["best_of_n"]
    assert stats["candidates"] == 3 and stats["scored_turns"] > 0
    for name, rates in stats["checks_first_vs_kept"].items():
        assert rates["kept"] >= rates["first"], name  # keeping the best never loses to the first sample
    # Each Tim request asked the real server for three choices and got three.
    requests = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    tim_requests = [r for r in requests if r["purpose"] == "tim"]
    assert tim_requests and all(isinstance(r["output"], list) and len(r["output"]) == 3 for r in tim_requests)
    # The row keeps the chosen candidate, and it passes at least as many checks as any other.
    records = [json.loads(line) for line in (out / "conversations.jsonl").read_text().splitlines()]
    others = load_persona("configs/persona.yaml").other_assistants()
    for record in records:
        for choice in record["choices"]:
            passed = [sum(c.values()) for c in choice["checks"]]
            assert passed[choice["kept"]] == max(passed)
            if record["status"] == "accepted":
                kept = [{"role": "assistant", "content": choice["candidates"][choice["kept"]]}]
                assert normalize_names(kept, "Tim", others) == [record["messages"][choice["message_index"]]]
    pairs = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    assert len(pairs) == stats["preference_pairs"]["train"]
    for pair in pairs:  # TRL's conversational preference format
        assert pair["prompt"][0]["role"] == "system" and pair["prompt"][-1]["role"] == "user"
        assert [m["role"] for m in pair["chosen"]] == [m["role"] for m in pair["rejected"]] == ["assistant"]
        assert sum(pair["meta"]["chosen_checks"].values()) > sum(pair["meta"]["rejected_checks"].values())
    assert "Best of n Tim turns" in (out / "README.md").read_text()


def test_resume_after_kill_9_ends_with_exact_count_no_duplicates(vllm_server, tmp_path):
    out = tmp_path / "synth"
    cmd = [str(Path(sys.executable).parent / "tim"), "synth", "--config", "configs/synth.yaml", "--output_dir",
           str(out), *_server_args(vllm_server), "--max_conversations", "12", *SMALL, "--max_concurrency", "4"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "conversations.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = journal.read_text().count("\n")
    assert not (out / "train.jsonl").exists()
    # Same command again: continues from the journal.
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report, rows = _check_output(out, 12)
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    accepted = Counter(r["key"] for r in records if r["status"] == "accepted")
    assert all(n == 1 for n in accepted.values()), "a conversation was accepted twice"
    assert len(records) >= done_before
    attempts = Counter((r["key"], r["attempt"]) for r in records)
    assert all(n == 1 for n in attempts.values()), "an attempt was generated twice"


@pytest.mark.parametrize("when", ["starting", "healthy"])
def test_sigterm_stops_the_vllm_server_synth_started(tmp_path, when):
    """SIGTERM to `tim synth` (systemd, a CI timeout, `kill`), while its vLLM starts or once it
    answers, stops that vLLM with it: before, the server and its engine processes ran on (3 GB, a
    core) until `tim generator stop`."""
    from conftest import VLLM_TEST_ARGS, free_port

    run_dir, port = tmp_path / "generator", free_port()
    generator = tmp_path / "generator.yaml"
    generator.write_text(yaml.safe_dump({"model": "embedded", "served_model_name": "tim-generator", "port": port,
                                         "run_dir": str(run_dir), "extra_args": list(VLLM_TEST_ARGS)}))  # fmt: skip
    cmd = [str(Path(sys.executable).parent / "tim"), "synth", "--config", "configs/synth.yaml", "--output_dir",
           str(tmp_path / "synth"), "--backend", "openai", "--generator_config", str(generator), "--max_conversations",
           "4", *SMALL]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    pid_file = run_dir / "server.pid"
    started = (lambda: pid_file.is_file() and pid_file.read_text().strip()) if when == "starting" else (
        lambda: vllm.healthy(f"http://127.0.0.1:{port}"))  # fmt: skip
    while time.monotonic() < deadline and proc.poll() is None and not started():
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    server_pid = int((run_dir / "server.pid").read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    assert "tim: stopping (SIGTERM)" in proc.stderr.read()
    deadline = time.monotonic() + 30
    while vllm.group_alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not vllm.group_alive(server_pid), "vLLM outlived tim synth"
    assert not (run_dir / "server.pid").exists()


def test_sigterm_stops_synth_on_llamacpp_without_finishing_the_queue(tmp_path):
    """SIGTERM to `tim synth` generating with llama.cpp (what an AVX2-only CPU gets): 16
    conversations' requests wait in turn for the one llama.cpp context. Before, each waiting
    request still ran its prompt through llama.cpp after the stop, and the process kept a core busy
    for minutes; now the waiting ones are dropped and the running one ends at its next token."""
    out = tmp_path / "synth"
    cmd = [str(Path(sys.executable).parent / "tim"), "synth", "--config", "configs/synth.yaml", "--output_dir",
           str(out), "--backend", "llamacpp", "--max_conversations", "16", "--turns", "2",
           "--tim_max_tokens", "48", "--student_max_tokens", "32"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    requests, deadline = out / "requests.jsonl", time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and not (requests.is_file() and requests.read_text()):
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    done_at_stop = requests.read_text().count("\n")
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=30)  # a request alone takes ~1-3 s here; the queue behind it minutes
    finally:
        proc.kill()
    assert code == 143 and "tim: stopping (SIGTERM)" in proc.stderr.read()
    assert requests.read_text().count("\n") <= done_at_stop + 1  # at most the one running


def test_resume_refuses_other_settings(tmp_path, vllm_server):
    out = tmp_path / "synth"
    args = ["--config", "configs/synth.yaml", "--output_dir", str(out), *_server_args(vllm_server),
            "--max_conversations", "1", "--turns", "1", "--tim_max_tokens", "24", "--student_max_tokens", "16"]  # fmt: skip
    synthesize.main(args)
    with pytest.raises(TimError, match="holds a run with other settings"):
        synthesize.main([*args, "--seed", "5"])


def test_synth_with_in_process_transformers_batches(tmp_path, embedded_model_dir):
    out = tmp_path / "synth"
    report = synthesize.main(
        ["--config", "configs/synth.yaml", "--output_dir", str(out), "--backend", "transformers",
         "--max_conversations", "3", "--turns", "1", "--tim_max_tokens", "24", "--student_max_tokens", "16",
         "--max_attempts", "1"]
    )  # fmt: skip
    assert report["backend"]["backend"] == "transformers" and report["attempts"] == 3
    requests = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert len(requests) >= 3 and all(r["backend"] == "transformers" for r in requests)


def test_transformers_backend_batches_concurrent_requests(embedded_model_dir):
    import asyncio

    from tutorkit.backends import Sampling
    from tutorkit.backends.transformers_local import TransformersChatBackend

    backend = TransformersChatBackend(embedded_model_dir, max_batch_size=8)
    sampling = Sampling(temperature=0.0, max_tokens=8)
    prompts = [[{"role": "user", "content": q}] for q in ("What is 2+2?", "Name a colour.", "Say hello.", "Hi!")]

    async def run():
        return await asyncio.gather(*(backend.complete(p, sampling) for p in prompts))

    replies = asyncio.run(run())
    assert all(isinstance(r, str) and r.strip() for r in replies)
    assert backend.generate_calls < len(prompts), "requests were not batched"
    calls = backend.generate_calls
    candidates = asyncio.run(backend.complete_n(prompts[0], Sampling(temperature=1.0, max_tokens=8, seed=3), 3))
    assert len(candidates) == 3 and backend.generate_calls == calls + 1  # n candidates, one generate()


def test_transformers_batch_reads_its_shared_prompt_once(embedded_model_dir):
    """Prompts that open alike (every probe and Tim prompt starts with the persona) share one run
    of those tokens, their keys and values repeated for every row: the replies must be the ones
    each prompt gets alone (greedy), rows of other lengths included, and the shared run must
    happen (the eval's 73 probes: 100 -> 78 s per model)."""
    import asyncio

    from tutorkit.backends import Sampling
    from tutorkit.backends.transformers_local import TransformersChatBackend

    backend = TransformersChatBackend(embedded_model_dir, max_batch_size=8)
    system = load_persona(ROOT / "configs/persona.yaml").render_system_prompt()
    chats = [[{"role": "system", "content": system}, {"role": "user", "content": q}]
             for q in ("hi", "why do cats purr when you stroke them?", "i am hungry", "can you help me with my fractions homework please")]  # fmt: skip
    greedy = Sampling(temperature=0.0, max_tokens=16)
    alone = [asyncio.run(backend.complete(chat, greedy)) for chat in chats]

    async def together():
        return await asyncio.gather(*(backend.complete(chat, greedy) for chat in chats))

    calls, forwards = backend.generate_calls, []
    hook = backend.model.model.register_forward_hook(lambda module, args, kwargs, out: forwards.append(kwargs["input_ids"].shape), with_kwargs=True)  # fmt: skip
    try:
        assert asyncio.run(together()) == alone
    finally:
        hook.remove()
    assert backend.generate_calls == calls + 1
    shared = forwards[0]  # the persona prompt, once (batch 1), before generate's own steps
    assert shared[0] == 1 and shared[1] > 200, forwards[:2]
    assert forwards[1][0] == len(chats) and forwards[1][1] < 20  # the rows' own tokens (with padding)


def test_vllm_server_stop_and_status_when_none_runs(tmp_path):
    cfg = vllm.VllmServerConfig(run_dir=str(tmp_path), port=1)
    assert vllm.status(cfg) == "stopped"
    assert vllm.stop(cfg) is False


def test_synth_with_llamacpp_the_engine_auto_picks_without_avx512(tmp_path, capsys):
    """On a CPU without AVX-512 `backend: auto` generates with llama.cpp (vLLM's CPU build crawls
    there); the choice is printed. Run here for real with the engine named, since this machine's
    CPU has AVX-512."""
    from tutorkit.hardware import local_engine, parse_flags

    assert local_engine(False, parse_flags("flags\t: fpu sse4_2 avx avx2 fma"))[0] == "llamacpp"
    assert local_engine(False, parse_flags("flags\t: fpu avx2 avx512f avx512bw"))[0] == "vllm"
    assert local_engine(True, parse_flags("flags\t: avx2"))[0] == "vllm"
    out = tmp_path / "synth"
    report = synthesize.main(["--config", "configs/synth.yaml", "--output_dir", str(out), "--backend", "llamacpp",
                              "--max_conversations", "2", *SMALL, "--max_concurrency", "2"])  # fmt: skip
    assert report["backend"]["backend"] == "llamacpp" and report["generated_tokens"] > 0
    _check_output(out, 2)
    requests = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert requests and all(r["backend"] == "llamacpp" and r["output"] for r in requests)
