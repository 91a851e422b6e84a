"""LoRA fine-tuning of Tim: `accelerate launch train/sft.py --config configs/sft.yaml`, preference
tuning after it: `accelerate launch train/dpo.py --config configs/dpo.yaml`, and the export of a
trained adapter: `tim export` (merged HF model, GGUF for llama.cpp and Ollama).

Holds: the TRL training scripts (sft.py; dpo.py), SFT's trainer that runs the batch's shared
persona prompt once (shared_prefix.py), what training sees and merged datasets
(data.py: `tim data show|merge`), the loss plot (plots.py), export (export.py,
gguf_export.py). export.py's functions take plain arguments (an adapter directory, an output
directory), which is how serving reaches them (serve/artifacts.py).

May import: `tutorkit` (the ground) only; never another stage, never the CLI.
"""
