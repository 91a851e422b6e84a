"""Synthesis of student-Tim conversations: `tim synth --config configs/synth.yaml`, and the
import of existing chat data: `tim import --config configs/import.yaml`.

Holds: the topic and scenario catalog, the plan and which gold exemplars each conversation is
shown (catalog.py), role-play and one-shot
generation (roleplay.py, transcript.py), best-of-n Tim turns and preference pairs
(best_of_n.py), post-processing and quality gates (postprocess.py, gates.py), the run with its
journal and dataset card (synthesize.py, card.py), the import (legacy_import.py, with the
common chat-dataset formats in chat_formats.py). Writes
`messages` datasets (schema: tutorkit/conversation.py) and preference pairs.

May import: `tutorkit` (the ground) only; never another stage, never the CLI.
"""
