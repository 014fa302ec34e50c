"""The evaluation prompts (SPEC §2): the paper's REC prompt and LLaVA-1.5's short-answer and
multiple-choice formats, as human turns of the record format's conversation list."""

from __future__ import annotations

from collections.abc import Sequence
from string import ascii_uppercase

IMAGE_TOKEN = "<image>"
SHORT_ANSWER = "Answer the question using a single word or phrase."
LETTER_ANSWER = "Answer with the option's letter from the given choices directly."


def human_turn(text: str, image: bool = True) -> list[dict[str, str]]:
    """One human turn; the image placeholder leads, as in the training records (SPEC §2)."""
    return [{"from": "human", "value": f"{IMAGE_TOKEN}\n{text}" if image else text}]


def rec_prompt(expression: str) -> str:
    """The paper's referring-expression prompt."""
    return f"Output the coordinate of {expression}."


def short_answer_prompt(question: str) -> str:
    """LLaVA-1.5's short-answer format (POPE, VQAv2, GQA)."""
    return f"{question}\n{SHORT_ANSWER}"


def multiple_choice_prompt(question: str, options: Sequence[str], context: str = "") -> str:
    """LLaVA-1.5's multiple-choice format: optional context line, question, lettered options
    ("A. ..."), then the instruction to answer with the letter."""
    lines = [context] if context else []
    lines.append(question)
    lines += [f"{letter}. {option}" for letter, option in zip(ascii_uppercase, options)]
    lines.append(LETTER_ANSWER)
    return "\n".join(lines)
