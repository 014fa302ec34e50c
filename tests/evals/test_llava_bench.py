"""LLaVA-Bench: the answers file in the layout LLaVA's GPT-judge script reads; no local score."""

import json

from tgg_jax.evals import from_config, write_submission


def test_answers_file(tmp_path):
    evaluator = from_config({"name": "llava_bench", "model_id": "tgg-3b"})
    predictions = [{"id": 1, "question": "What is unusual?", "answer": "A man irons."},
                   {"id": 0, "question": "Describe the image.", "answer": "A taxi."}]
    assert evaluator.score(predictions) == {}
    path = write_submission(str(tmp_path), evaluator.submission(predictions))
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    # The judge walks questions and answers line by line: question order.
    assert rows == [
        {"question_id": 0, "prompt": "Describe the image.", "text": "A taxi.",
         "answer_id": "tgg-3b-0", "model_id": "tgg-3b", "metadata": {}},
        {"question_id": 1, "prompt": "What is unusual?", "text": "A man irons.",
         "answer_id": "tgg-3b-1", "model_id": "tgg-3b", "metadata": {}},
    ]


def test_prompt_is_the_question():
    evaluator = from_config({"name": "llava_bench"})
    assert evaluator.prompt({"question": "What is unusual about this image?"}) == [
        {"from": "human", "value": "<image>\nWhat is unusual about this image?"}]
