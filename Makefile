# The two commands of README's Quick start. Each builds or updates .venv and .venv-vllm first
# (seconds when already set up).
.PHONY: demo test setup clean

setup:
	@scripts/setup_env.sh --vllm

demo: setup
	@# llama.cpp when the config names it, or when `backend: auto` will pick it (a CPU without AVX-512)
	@if grep -q '^backend: *llamacpp' configs/serve.yaml || ! grep -q avx512f /proc/cpuinfo; then scripts/setup_env.sh --llamacpp; fi
	@.venv/bin/tim demo --config configs/demo.yaml

test: setup
	@scripts/setup_env.sh --browser --llamacpp
	@.venv/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf runs .pytest_cache
