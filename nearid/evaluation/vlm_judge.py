"""The VLM judge's prompt, chat formatting and answer parsing (no model code here, so it is cheap to test).

The judge sees image A and image B and answers with one JSON object holding instance-level evidence, a confidence
and an integer score from 0 to 10 (appendix E.11); ``score / 10`` stands in for a cosine similarity. Answers are
parsed robustly (code fences, surrounding prose, trailing commas, Python literals, truncated JSON with a score);
an answer without a usable score gets a named problem so it can be counted and reported, never dropped.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from nearid.evaluation.cache import Judgement


JUDGE_PROMPT = """\
You are given two photos, image A (first) and image B (second). Decide whether they show the very same physical \
object, one particular instance, and not merely two objects of the same kind.

How to judge:
- Ignore the background, the surroundings, the lighting, the camera angle and any watermark. Two photos taken in \
the same place can show different objects, and one object can be photographed in different places.
- Use only evidence on the object itself, strongest first: individual marks such as scratches, wear, dents, \
stickers or stains; the exact shape and proportions of its parts; printed text, labels or logos; colours and \
patterns only when they are unusual.
- Objects of the same category, model or colour are still different instances unless instance-level details agree.
- If the object is hidden, very small or blurred in either photo, say so and keep the score near the middle.

Score, an integer from 0 to 10: 10 = certainly the same instance, 7 to 9 = probably the same, 4 to 6 = cannot \
tell, 1 to 3 = probably different, 0 = certainly different.

Reply with a single JSON object and nothing else, using exactly these keys:
{"match_evidence": ["short phrases"], "conflict_evidence": ["short phrases"], "background_used": false, \
"confidence": "high" or "medium" or "low", "score": 0 to 10}
"""

SCORE_MAX = 10.0
PROBLEMS = (
    "empty-answer",
    "no-json",
    "invalid-json",
    "no-score",
    "score-not-a-number",
    "score-out-of-range",
)
"""Every reason an answer can be unusable; reports count answers per reason."""

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.DOTALL)
_SCORE_FIELD = re.compile(r"""["']?\bscore\b["']?\s*[:=]\s*["']?(-?\d+(?:\.\d+)?)""", re.IGNORECASE)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_PY_LITERALS = {r"\bTrue\b": "true", r"\bFalse\b": "false", r"\bNone\b": "null"}
_FRACTION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*10(?:\.0+)?)?\s*$")


@dataclass(frozen=True)
class Verdict:
    """A parsed answer: the score (0-10) or None with a problem from ``PROBLEMS``, plus the optional fields."""

    score: float | None
    problem: str | None
    confidence: str | None = None
    background_used: bool | None = None

    def judgement(self, answer: str) -> Judgement:
        """The cacheable record of this verdict and the raw answer it came from."""
        return Judgement(self.score, self.problem, answer)


def chat_prompt(image_tokens: tuple[int, int], image_token: str = "<|image_pad|>") -> str:
    """The Qwen chat-format text of one judge request: a user turn with image A, image B and the prompt.

    ``image_tokens`` is the number of placeholder tokens each image expands to (its merged patch count). The
    format is the one the Qwen3-VL chat template produces for this message, written out so that loading needs no
    processor class (the published one requires torchvision for its video part).
    """
    vision = "".join(f"<|vision_start|>{image_token * n}<|vision_end|>" for n in image_tokens)
    return f"<|im_start|>user\n{vision}{JUDGE_PROMPT}<|im_end|>\n<|im_start|>assistant\n"


def _to_score(value: Any) -> tuple[float | None, str | None]:
    """A 0-10 score from a JSON value (numbers, numeric strings, "7/10"), or the problem with it."""
    if isinstance(value, bool) or value is None:
        return None, "score-not-a-number"
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and (match := _FRACTION.match(value)):
        number = float(match.group(1))
    else:
        return None, "score-not-a-number"
    if not math.isfinite(number):
        return None, "score-not-a-number"
    if not 0.0 <= number <= SCORE_MAX:
        return None, "score-out-of-range"
    return number, None


def _score_value(obj: dict[str, Any]) -> tuple[bool, Any]:
    for key, value in obj.items():
        if isinstance(key, str) and key.strip().lower() == "score":
            return True, value
    return False, None


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object that decodes starting at some '{' of ``text``, in order."""
    decoder = json.JSONDecoder()
    found = []
    for match in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            found.append(obj)
    return found


def _repaired(text: str) -> str:
    """The first '{' to the last '}' with common slips fixed: trailing commas, Python literals, curly quotes."""
    start = text.find("{")
    end = text.rfind("}")
    body = text[start : end + 1] if end > start else text[start:] + "}"
    body = body.replace("\u201c", '"').replace("\u201d", '"')
    for pattern, replacement in _PY_LITERALS.items():
        body = re.sub(pattern, replacement, body)
    if '"' not in body:
        body = body.replace("'", '"')
    return _TRAILING_COMMA.sub(r"\1", body)


def _verdict(obj: dict[str, Any]) -> Verdict:
    has_score, value = _score_value(obj)
    confidence = obj.get("confidence") if isinstance(obj.get("confidence"), str) else None
    background = obj.get("background_used") if isinstance(obj.get("background_used"), bool) else None
    if not has_score:
        return Verdict(None, "no-score", confidence, background)
    score, problem = _to_score(value)
    return Verdict(score, problem, confidence, background)


def parse_answer(text: str) -> Verdict:
    """Parse one judge answer; see the module docstring. Never raises on model output."""
    stripped = text.strip()
    if not stripped:
        return Verdict(None, "empty-answer")
    fenced = _FENCE.search(stripped)
    body = fenced.group(1) if fenced else stripped
    objects: list[dict[str, Any]] = []
    if "{" in body:
        objects = _json_objects(body) or _json_objects(_repaired(body))
    scored = [obj for obj in objects if _score_value(obj)[0]]
    if scored or objects:
        return _verdict(scored[0] if scored else objects[0])
    field = _SCORE_FIELD.search(body)
    if field:  # a truncated or malformed object that still states its score
        score, problem = _to_score(field.group(1))
        return Verdict(score, problem)
    return Verdict(None, "invalid-json" if "{" in body else "no-json")
