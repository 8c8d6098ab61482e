"""Distractor prompts from identity descriptions.

``self`` prompts with the identity's own description (a same-category, different-instance object);
``nearest`` (the default) with the description of the most similar *other* identity, so the
inpainted object is semantically close but a different instance, as the paper's retrieval intends.
Similarity: cosine over idf-weighted word sets (no model needed, deterministic, ties to the lower id).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from collections.abc import Mapping

from generators.config import PromptStrategy


STOP_WORDS = frozenset({"a", "an", "the", "with", "and", "of", "on", "in", "its", "is", "to"})


def _tokens(text: str) -> set[str]:
    return {t for t in re.findall(r"[a-z0-9]+", text.lower()) if t not in STOP_WORDS}


class PromptBook:
    """Prompts for every identity of a dataset under one strategy and template."""

    def __init__(self, descriptions: Mapping[int, str], strategy: PromptStrategy, template: str) -> None:
        if strategy not in ("nearest", "self"):
            raise ValueError(f"unknown prompt strategy {strategy!r}; valid: nearest, self")
        self.descriptions = dict(descriptions)
        self.strategy = strategy
        self.template = template
        self._nearest: dict[int, int] = {}
        if strategy == "nearest":
            self._nearest = self._build_nearest()

    def _build_nearest(self) -> dict[int, int]:
        tokens = {i: _tokens(d) for i, d in self.descriptions.items()}
        postings: dict[str, list[int]] = defaultdict(list)
        for identity in sorted(tokens):
            for token in tokens[identity]:
                postings[token].append(identity)
        n = max(1, len(tokens))
        idf = {t: math.log((1 + n) / (1 + len(ids))) + 1.0 for t, ids in postings.items()}
        norm = {i: math.sqrt(sum(idf[t] ** 2 for t in ts)) or 1.0 for i, ts in tokens.items()}
        nearest = {}
        for identity, own in tokens.items():
            scores: dict[int, float] = defaultdict(float)
            for token in own:
                for other in postings[token]:
                    if other != identity:
                        scores[other] += idf[token] ** 2
            if scores:
                nearest[identity] = min(scores, key=lambda o: (-scores[o] / (norm[identity] * norm[o]), o))
            else:
                others = [o for o in sorted(tokens) if o != identity]
                nearest[identity] = others[0] if others else identity
        return nearest

    def source_of(self, identity: int) -> int:
        """The identity whose description prompts ``identity``'s distractors."""
        return self._nearest.get(identity, identity) if self.strategy == "nearest" else identity

    def prompt(self, identity: int) -> str:
        return self.template.format(description=self.descriptions[self.source_of(identity)])

    def digest(self) -> str:
        """Changes whenever any prompt could change (part of a shard's config hash)."""
        payload = "\n".join(f"{i}\t{self.descriptions[i]}" for i in sorted(self.descriptions))
        return hashlib.sha256(f"{self.strategy}|{self.template}|{payload}".encode()).hexdigest()[:16]
