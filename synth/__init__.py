"""Synthesis of student-Tim conversations: `tim synth --config configs/synth.yaml`."""
