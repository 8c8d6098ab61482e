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
        # the index is linear in the descriptions; each identity's neighbour is found when first asked for
        self._tokens = {i: _tokens(d) for i, d in self.descriptions.items()}
        self._postings: dict[str, list[int]] = defaultdict(list)
        for identity in sorted(self._tokens):
            for token in self._tokens[identity]:
                self._postings[token].append(identity)
        n = max(1, len(self._tokens))
        self._idf = {t: math.log((1 + n) / (1 + len(ids))) + 1.0 for t, ids in self._postings.items()}
        # sums run over sorted tokens: a set's order depends on PYTHONHASHSEED, and float sums on their order
        self._norm = {
            i: math.sqrt(sum(self._idf[t] ** 2 for t in sorted(ts))) or 1.0 for i, ts in self._tokens.items()
        }

    def _nearest_of(self, identity: int) -> int:
        scores: dict[int, float] = defaultdict(float)
        for token in sorted(self._tokens[identity]):
            weight = self._idf[token] ** 2
            for other in self._postings[token]:
                if other != identity:
                    scores[other] += weight
        if scores:
            norm = self._norm[identity]
            return min(scores, key=lambda o: (-scores[o] / (norm * self._norm[o]), o))
        others = (o for o in sorted(self._tokens) if o != identity)
        return next(others, identity)

    def source_of(self, identity: int) -> int:
        """The identity whose description prompts ``identity``'s distractors."""
        if self.strategy == "self":
            return identity
        if identity not in self._nearest:
            self._nearest[identity] = self._nearest_of(identity)
        return self._nearest[identity]

    def prompt(self, identity: int) -> str:
        return self.template.format(description=self.descriptions[self.source_of(identity)])

    def digest(self) -> str:
        """Changes whenever any prompt could change (part of a shard's config hash)."""
        payload = "\n".join(f"{i}\t{self.descriptions[i]}" for i in sorted(self.descriptions))
        return hashlib.sha256(f"{self.strategy}|{self.template}|{payload}".encode()).hexdigest()[:16]
