"""Filters, schema checks and family rendering on hand-worked inputs."""

import collections

import pytest

from tgg_jax.synth import families, filters, schema

LIMITS = {"min_area": 0.01, "max_area": 0.8, "max_option_iou": 0.3, "min_confidence": 0.4,
          "max_boxes_per_phrase": 3}


def obj(box, score=0.9, boxes=1, phrase="cup"):
    return {"phrase": phrase, "box": box, "score": score, "phrase_boxes": boxes}


def rec(crops=(), options=(), uses=()):
    return {"crops": list(crops), "options": list(options), "uses": list(uses or crops)}


# Image 200 x 100 = 20000 px.
OBJECTS = {
    "obj1": obj([0, 0, 10, 10]),            # 100 px: 0.005 of the image
    "obj2": obj([0, 0, 190, 100]),          # 19000 px: 0.95
    "obj3": obj([20, 20, 40, 40]),          # 400 px: 0.02
    "obj4": obj([30, 20, 50, 40]),          # overlaps obj3 by 10 x 20 = 200: IoU 200 / 600 = 1/3
    "obj5": obj([100, 50, 130, 80], score=0.3),
    "obj6": obj([150, 10, 170, 30], boxes=4),
    "obj7": obj([60, 60, 80, 90]),          # 600 px, apart from obj3
}


@pytest.mark.parametrize("record, expected", [
    (rec(["obj1"]), filters.TOO_SMALL),
    (rec(["obj2"]), filters.TOO_LARGE),
    (rec(["obj3"]), filters.KEEP),
    (rec(["obj3", "obj4"], ["obj3", "obj4"]), filters.SIMILAR_OPTIONS),
    (rec(["obj3", "obj7"], ["obj3", "obj7"]), filters.KEEP),
    (rec(uses=["obj5"]), filters.LOW_CONFIDENCE),
    (rec(uses=["obj6"]), filters.TOO_MANY_BOXES),
    # A small object named in text (not shown as an object image) passes the area check.
    (rec(uses=["obj1"]), filters.KEEP),
])
def test_verdicts(record, expected):
    assert filters.verdict(record, OBJECTS, 200, 100, LIMITS) == expected


def test_thresholds_move_verdicts():
    looser = {**LIMITS, "max_option_iou": 0.5, "min_confidence": 0.25, "max_boxes_per_phrase": 4}
    assert filters.verdict(rec(["obj3", "obj4"], ["obj3", "obj4"]), OBJECTS, 200, 100, looser) == filters.KEEP
    assert filters.verdict(rec(uses=["obj5"]), OBJECTS, 200, 100, looser) == filters.KEEP
    assert filters.verdict(rec(uses=["obj6"]), OBJECTS, 200, 100, looser) == filters.KEEP


def test_iou_hand_worked():
    assert filters.iou([20, 20, 40, 40], [30, 20, 50, 40]) == pytest.approx(1 / 3)
    assert filters.iou([0, 0, 10, 10], [10, 10, 20, 20]) == 0.0
    assert filters.iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0


def test_schema_recognition():
    assert schema.recognition('```json\n{"objects": ["Red Cup.", "red cup", "a  dog"]}\n```', 5) == [
        "red cup", "a dog"]
    with pytest.raises(schema.Bad) as e:
        schema.recognition("I see a cup", 5)
    assert e.value.reason == schema.NOT_JSON
    with pytest.raises(schema.Bad) as e:
        schema.recognition('{"objects": "cup"}', 5)
    assert e.value.reason == schema.OFF_SCHEMA


def test_schema_relations_drop_unknown_objects():
    problems = collections.Counter()
    got = schema.relations('{"relations": [["obj1", "left of", "obj2"], ["obj1", "on", "obj9"], '
                           '["obj2", "above"]]}', {"obj1", "obj2"}, problems)
    assert got == [["obj1", "left of", "obj2"]]
    assert problems == {schema.NOT_IN_L1: 1, schema.OFF_SCHEMA: 1}


def test_schema_local_qa_placeholders():
    problems = collections.Counter()
    answer = ('{"descriptions": {"obj1": "the red cup", "obj7": "x"}, "qas": ['
              '{"question": "What is left of {obj2}?", "answer": "{obj1}"},'
              '{"question": "What is left of {obj3}?", "answer": "{obj1}"},'
              '{"question": "Which is left of {obj2}?", "options": ["{obj1}", "{obj2}"], "answer": "{obj9}"},'
              '{"question": "What is left of {obj 2}?", "answer": "{obj1}"}]}')
    got = schema.local_qa(answer, {"obj1", "obj2"}, problems)
    assert got == {"descriptions": {"obj1": "the red cup"},
                   "qas": [{"question": "What is left of {obj2}?", "answer": "{obj1}"}]}
    assert problems == {schema.NOT_IN_L1: 1, schema.BAD_PLACEHOLDER: 3}


def test_families_render_objects_boxes_and_names():
    # 200 x 100 image: padded square 200, y offset 50.
    objects = {"obj1": obj([0, 0, 100, 50], phrase="red cup"),
               "obj2": obj([100, 50, 200, 100], phrase="blue plate")}
    renderer = families.Renderer(objects, 200, 100)
    qa = {"descriptions": {"obj1": "the red cup on the left"},
          "qas": [{"question": "What is right of the {obj1}?", "answer": "The {obj2}."},
                  {"question": "Which is right of {obj1}?", "options": ["{obj1}", "{obj2}"],
                   "answer": "{obj2}"}]}
    out = {r["id"]: r for r in families.stage2("img", qa, renderer, families.FAMILIES)}
    where = out["img-image_box-000"]
    assert where["conversations"][0]["value"] == "<image>\nWhere is <object> in the image?"
    assert where["conversations"][1]["value"] == "[0.000, 0.250, 0.500, 0.500]"
    assert where["objects"] == [[0, 0, 100, 50]]
    assert out["img-image_box-001"]["conversations"][0]["value"] == (
        "<image>\nOutput the coordinate of the red cup on the left.")
    relation = out["img-image_box-004"]
    assert relation["conversations"][0]["value"] == "<image>\nWhat is right of the <object>?"
    assert relation["conversations"][1]["value"] == "The region [0.500, 0.500, 1.000, 0.750]."
    named = out["img-text_image-000"]
    assert named["conversations"][1]["value"] == "The blue plate."
    for family in ("image_box", "text_image"):
        choice = [r for r in out.values() if r["family"] == family and r["options"]][0]
        question, answer = (t["value"] for t in choice["conversations"])
        assert question.count("<object>") == len(choice["objects"]) == 2
        # The answer letter points at obj2's crop, whatever the shuffled order.
        assert choice["objects"]["AB".index(answer)] == [100, 50, 200, 100]
    assert "right of the red cup on the left?" in out["img-text_image-001"]["conversations"][0]["value"]
    conversation = families.conversation("img", [{"question": "Where is the {obj1}?",
                                                   "answer": "The {obj1} is at the top."}], renderer)
    assert conversation["conversations"][1]["value"] == (
        "The red cup [0.000, 0.250, 0.500, 0.500] is at the top.")
    assert conversation["objects"] == [] and conversation["uses"] == ["obj1"]


def test_rec_detector_maps_the_answer_box_to_pixels():
    """The rec backend asks the paper's REC prompt and maps the answer off the padded square."""
    from PIL import Image

    from tgg_jax.synth import detectors

    rec = detectors.Rec.__new__(detectors.Rec)
    asked = []

    def predict(model, config, tokenizer, image, prompt):
        asked.append(prompt)
        return "[0.250, 0.300, 0.500, 0.700]" if "cup" in prompt else "I do not know."

    rec.model = rec.config = rec.tokenizer = None
    rec._predict = predict
    found = rec.detect(Image.new("RGB", (200, 100)), ["red cup", "dog"])
    # 200 x 100 pads to 200 x 200 with 50 rows above: y = 0.3 * 200 - 50 = 10.
    assert found == {"red cup": [([50.0, 10.0, 100.0, 90.0], 1.0)], "dog": []}
    assert asked[0] == "Output the coordinate of the red cup."


def test_shard_spec_from_flags_config_and_slurm():
    from configs.synth import default
    from tgg_jax.synth import cli

    c = default.get_config()
    assert cli.shard_spec(c, env={}) == (0, 1)
    assert cli.shard_spec(c, 3, 8, env={}) == (3, 8)
    array = {"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert cli.shard_spec(c, env=array) == (2, 4)
    assert cli.shard_spec(c, env={"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}) == (1, 2)
    with pytest.raises(cli.UsageError):
        cli.shard_spec(c, 4, 4, env={})


def test_slurm_example_is_valid_bash():
    import subprocess

    from tgg_jax.synth import cli

    script = cli.REPO / "launch" / "synth_slurm_array.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
