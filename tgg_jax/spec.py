"""The numbers and strings every part agrees on (SPEC §1-2), in one place: placeholders and their
ids, the chat template's system prompt, the prompts, image normalisation and crop margin.

Data, models, evaluation, conversion and the PyTorch side import them from here; nothing else
spells them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from string import ascii_uppercase

# Placeholders (SPEC §1): two added special tokens whose runs the model overwrites with visual rows.
IMAGE_TOKEN = "<image>"
OBJECT_TOKEN = "<object>"
# Qwen2.5's tokenizer has 151665 entries; the placeholders take the next two ids, unused rows of
# its 151936-row embedding table, so the table is not resized.
IMAGE_TOKEN_ID = 151665
OBJECT_TOKEN_ID = 151666

# Conversation template (SPEC §2): Qwen2.5 ChatML with its default system prompt.
SYSTEM_PROMPT = "You are a helpful assistant."

# Prompts (SPEC §2): the paper's REC prompt, region captioning, LLaVA-1.5's answer formats.
REC_PROMPT = "Output the coordinate of {expression}."
REGION_CAPTION_PROMPT = "Describe the region {box}."
SHORT_ANSWER = "Answer the question using a single word or phrase."
LETTER_ANSWER = "Answer with the option's letter from the given choices directly."

# Image preprocessing (SPEC §2): pad fill = CLIP mean x 255; CLIP and ImageNet statistics.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAD_FILL = (122, 116, 104)
# Object crops (SPEC §2): each side moves out by this share of the box's width / height.
OBJECT_MARGIN = 0.1


def rec_prompt(expression: str) -> str:
    """The paper's referring-expression prompt."""
    return REC_PROMPT.format(expression=expression)


def region_caption_prompt(box: str) -> str:
    """Region captioning, `box` as '[x1, y1, x2, y2]' text."""
    return REGION_CAPTION_PROMPT.format(box=box)


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


def scienceqa_prompt(question: str, choices: Sequence[str], hint: str = "") -> str:
    """LLaVA-1.5's ScienceQA test prompt: "Context: {hint}" when there is one, question, lettered
    choices."""
    return multiple_choice_prompt(question, choices, context=f"Context: {hint}" if hint else "")


def human_turn(text: str, image: bool = True) -> list[dict[str, str]]:
    """One human turn of the record format; the image placeholder leads, as in the training
    records (SPEC §2)."""
    return [{"from": "human", "value": f"{IMAGE_TOKEN}\n{text}" if image else text}]
