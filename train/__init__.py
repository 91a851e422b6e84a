"""LoRA fine-tuning of Tim: `accelerate launch train/sft.py --config configs/sft.yaml`."""
