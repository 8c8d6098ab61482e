"""Judge prompt and answer parsing on hand-written good and bad answers."""

from __future__ import annotations

import pytest

from nearid.evaluation.vlm_judge import JUDGE_PROMPT, PROBLEMS, Verdict, chat_prompt, parse_answer


GOOD = (
    '{"match_evidence": ["same dent"], "conflict_evidence": [], "background_used": false, '
    '"confidence": "high", "score": 8}'
)


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        (GOOD, 8.0),
        ("```json\n" + GOOD + "\n```", 8.0),
        ("Here is my judgement:\n" + GOOD + "\nThanks.", 8.0),
        ('{"match_evidence": ["logo"], "score": 7.5,}', 7.5),  # trailing comma
        ("{'match_evidence': [], 'background_used': False, 'score': 3}", 3.0),  # Python literal style
        ('{"Score": "6"}', 6.0),
        ('{"score": "9/10"}', 9.0),
        ('{"score": 0}', 0.0),
        ('{"score": 10}', 10.0),
        ('{"verdict": {"confidence": "low", "score": 5}}', 5.0),  # nested object
        ('{"match_evidence": ["scratch on lid"], "conflict_evidence": [], "score": 4, "confidence": "me', 4.0),
        ("score: 2", 2.0),
    ],
)
def test_usable_answers_give_their_score(answer: str, score: float) -> None:
    verdict = parse_answer(answer)
    assert verdict.problem is None and verdict.score == score


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("", "empty-answer"),
        ("   \n", "empty-answer"),
        ("The two objects look alike.", "no-json"),
        ("�|0000000000", "no-json"),
        ('{"match_evidence": ["a", "b"', "invalid-json"),  # truncated before the score
        ('{"match_evidence": [], "confidence": "high"}', "no-score"),
        ('{"score": 11}', "score-out-of-range"),
        ('{"score": -1}', "score-out-of-range"),
        ('{"score": true}', "score-not-a-number"),
        ('{"score": "high"}', "score-not-a-number"),
        ('{"score": null}', "score-not-a-number"),
    ],
)
def test_unusable_answers_name_their_problem(answer: str, problem: str) -> None:
    verdict = parse_answer(answer)
    assert verdict.score is None and verdict.problem == problem and problem in PROBLEMS
    assert verdict.judgement(answer).answer == answer


def test_optional_fields_are_kept() -> None:
    assert parse_answer(GOOD) == Verdict(8.0, None, "high", False)


def test_prompt_asks_for_instance_evidence_and_a_json_score() -> None:
    for phrase in ("same physical object", "Ignore the background", "0 to 10", '"score"', "match_evidence"):
        assert phrase in JUDGE_PROMPT
    text = chat_prompt((4, 2))
    assert text.startswith("<|im_start|>user\n<|vision_start|>")
    assert text.count("<|image_pad|>") == 6 and text.count("<|vision_end|>") == 2
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
