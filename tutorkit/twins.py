"""Twins of a protected text (a test probe's student message) among texts a model is trained on
or shown (exemplars, scenarios, topics, synthesized rows): a held-out probe with a reworded twin
in training measures recall of the twin, not the behaviour.

Two rules, on words folded to lower case with apostrophes dropped ("don't" = "dont"):
- a shared run of 4 or more words that holds at least 2 content words ("my mum and dad", "talk
  dirty to me"); a run of function words ("i dont know what") is everyday English, not a twin;
- word 3-shingle sets with a Jaccard similarity of 0.5 or more (exact, not a MinHash estimate:
  the sets are small).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

STOP_WORDS = frozenset("""a an the and or but so if then than to of in on at by for with from up down out over about into
as is are was were be been being am do does did done doing have has had having i im me my mine you your youre u ur he
she it its we they them their this that these those there here what whats which who whom whose why how when where
not no yes yeah ok okay just like really very can cant could would should will wont get got dont know tell want need
please thanks lol idk also too some any all much many more most one two said says say let lets go going gonna wanna
still even again ever only well oh hey hi hmm um uh user student assistant tutor bot thats theres ive ill id
isnt arent wasnt didnt doesnt hes shes theyre weve youve youll""".split())  # fmt: skip


def fold_words(text: str) -> list[str]:
    """Words for comparing wording: lower case, apostrophes dropped."""
    return [w.lower().replace("'", "") for w in re.findall(r"[A-Za-z0-9']+", text.replace("’", "'"))]


def is_content(word: str) -> bool:
    return word.isdigit() or (len(word) >= 3 and word not in STOP_WORDS)


def _runs(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def content_runs(text: str, n: int = 4, min_content: int = 2) -> set[tuple[str, ...]]:
    return {r for r in _runs(fold_words(text), n) if sum(map(is_content, r)) >= min_content}


def shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    return _runs(fold_words(text), n)


def twins(protected: dict[str, list[str]], texts: Iterable[str], jaccard: float = 0.5) -> dict[str, list[str]]:
    """{key of `protected`: the texts that twin one of its messages} (keys with none left out)."""
    wanted = {key: [(content_runs(m), shingles(m)) for m in messages] for key, messages in protected.items()}
    found: dict[str, list[str]] = {}
    for text in texts:
        runs, grams = content_runs(text), shingles(text)
        for key, messages in wanted.items():
            for m_runs, m_grams in messages:
                overlap = len(m_grams & grams) / len(m_grams | grams) if m_grams and grams else 0.0
                if m_runs & runs or overlap >= jaccard:
                    found.setdefault(key, []).append(text)
                    break
    return found
