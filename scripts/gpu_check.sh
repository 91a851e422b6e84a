#!/usr/bin/env bash
# The whole CUDA path in one run, for a GPU machine lent for a few minutes (the H200 test machine:
# no network, no model weights, no vLLM; see ../shared/gpu/README.md). Budget: about 9 minutes.
#
#   scripts/gpu_check.sh              on the GPU machine, from the project root
#   scripts/gpu_check.sh --dry-run    anywhere: prints each step's command, checks files and configs
#
# Before: ../shared/gpu/fetch_wheels.sh bitsandbytes==0.50.2   (trl, datasets, liger, bitsandbytes
# into .whl/, which travels with the working tree). This wrapper installs them into .pysite when
# they are missing, then scripts/gpu_check.py runs the steps, each under its own time limit, and
# appends what it measured to docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if [ "${1:-}" != "--dry-run" ] && ! $py -c "import trl, datasets" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        echo "gpu_check: installing the carried wheels (.whl/) into .pysite"
        $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .pysite .whl/*.whl
    else
        echo "gpu_check: trl/datasets missing and no .whl/ carried: run ../shared/gpu/fetch_wheels.sh first" >&2
        exit 2
    fi
fi
export PYTHONPATH="$PWD/.pysite:$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec $py scripts/gpu_check.py "$@"
