"""Synthesis of student-Tim conversations: `tim synth --config configs/synth.yaml`, and the
import of legacy transcripts: `tim import --config configs/import.yaml`.

Holds: the topic and scenario catalog, the plan and which gold exemplars each conversation is
shown (catalog.py), role-play and one-shot
generation (roleplay.py, transcript.py), best-of-n Tim turns and preference pairs
(best_of_n.py), post-processing and quality gates (postprocess.py, gates.py), the run with its
journal and dataset card (synthesize.py, card.py), legacy import (legacy_import.py). Writes
`messages` datasets (schema: tutorkit/conversation.py) and preference pairs.

May import: `tutorkit` (the ground) only; never another stage, never the CLI.
"""
