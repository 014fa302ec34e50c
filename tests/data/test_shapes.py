"""tgg_shapes scene generator: determinism, split separation, pixels that match the annotations,
unambiguous expressions (checked by an independent resolver), balanced yes/no, chance-level REC."""

import collections
import hashlib
import io
import re

import numpy as np
import pytest
from PIL import Image

from tgg_jax.data import coords, shape_scenes, shape_tasks, shapes
from tgg_jax.data.builders.raw_entries import Entry

SEED = 3
N = 160  # records per split in these tests


@pytest.fixture(scope="module")
def validation():
    return [shapes.make_record(SEED, "validation", i) for i in range(N)]


def _scene(split, index):
    return shape_scenes.sample_scene(shapes.record_rng(SEED, split, index))


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _centre(shape):
    return (shape.box[0] + shape.box[2]) / 2, (shape.box[1] + shape.box[3]) / 2


def _resolve(expression, scene):
    """Which shapes an expression denotes, read with the test's own grammar."""
    m = re.fullmatch(r"the (small|medium|large) (\w+) (\w+)"
                     r"(?: (on the left|on the right|at the top|at the bottom))?", expression)
    assert m, expression
    size, color, kind, where = m.groups()
    matches = [s for s in scene.shapes if (s.size, s.color, s.kind) == (size, color, kind)]
    if where is None:
        return matches
    axis = 0 if where in ("on the left", "on the right") else 1
    pick = min if where in ("on the left", "at the top") else max
    return [pick(matches, key=lambda s: _centre(s)[axis])]


def test_same_seed_same_bytes_and_text():
    for i in range(6):
        a = shapes.make_record(SEED, "train", i, multi_turn=0.5)
        b = shapes.make_record(SEED, "train", i, multi_turn=0.5)
        assert a["image"] == b["image"]
        assert a["conversations"] == b["conversations"]
        np.testing.assert_array_equal(a["objects"], b["objects"])
    other_seed = shapes.make_record(SEED + 1, "train", 0)["image"]
    assert other_seed != shapes.make_record(SEED, "train", 0)["image"]


def test_splits_never_share_images():
    digests = {split: {hashlib.sha256(shapes.make_record(SEED, split, i)["image"]).digest()
                       for i in range(40)} for split in shapes.SPLITS}
    assert all(len(d) == 40 for d in digests.values())
    assert not digests["train"] & digests["validation"]
    assert not digests["train"] & digests["test"]
    assert not digests["validation"] & digests["test"]


def test_record_image_is_the_scene_with_its_boxes(validation):
    for i, record in enumerate(validation[:40]):
        scene = _scene("validation", i)
        image = Image.open(io.BytesIO(record["image"]))
        assert image.format == "PNG"
        assert image.size == (record["width"], record["height"]) == (scene.width, scene.height)
        rgb = np.asarray(image.convert("RGB")).astype(int)
        for shape in scene.shapes:
            x1, y1, x2, y2 = (int(v) for v in shape.box)
            # The named colour fills the box centre ...
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
            assert tuple(rgb[cy, cx]) == shape_scenes.COLORS[shape.color]
            # ... and its pixels near the box span exactly the box (shapes are >= GAP apart).
            m = shape_scenes.GAP // 2
            window = rgb[max(y1 - m, 0):y2 + m, max(x1 - m, 0):x2 + m]
            ys, xs = np.nonzero((window == shape_scenes.COLORS[shape.color]).all(-1))
            ox, oy = max(x1 - m, 0), max(y1 - m, 0)
            span = (xs.min() + ox, ys.min() + oy, xs.max() + ox + 1, ys.max() + oy + 1)
            assert span == (x1, y1, x2, y2)


def test_scene_geometry():
    counts = []
    for i in range(N):
        scene = _scene("train", i)
        counts.append(len(scene.shapes))
        assert 2 <= len(scene.shapes) <= 5
        assert scene.width != scene.height  # always padded
        assert 160 <= min(scene.width, scene.height) and max(scene.width, scene.height) <= 224
        for j, s in enumerate(scene.shapes):
            x1, y1, x2, y2 = s.box
            assert 0 <= x1 < x2 <= scene.width and 0 <= y1 < y2 <= scene.height
            side = x2 - x1
            assert side == y2 - y1
            assert {"small": 16 <= side <= 20, "medium": 30 <= side <= 36,
                    "large": 50 <= side <= 58}[s.size]
            for t in scene.shapes[j + 1:]:
                assert _iou(s.box, t.box) == 0.0
    assert set(counts) == {2, 3, 4, 5}


def test_expressions_denote_exactly_their_object():
    with_position = 0
    for i in range(400):
        scene = _scene("train", i)
        expressions = shape_tasks.referring_expressions(scene)
        assert len(set(expressions)) == len(expressions)
        for shape, expression in zip(scene.shapes, expressions):
            assert _resolve(expression, scene) == [shape], expression
            with_position += expression.endswith(("left", "right", "top", "bottom"))
    assert with_position > 0  # the twin case is exercised


def test_hand_worked_turns():
    # 200 x 160 image: padded to 200, so y moves down by (200 - 160) // 2 = 20.
    circle = shape_scenes.Shape("circle", "red", "small", (10.0, 20.0, 28.0, 38.0))
    twin = shape_scenes.Shape("circle", "red", "small", (100.0, 24.0, 118.0, 42.0))
    square = shape_scenes.Shape("square", "blue", "large", (100.0, 70.0, 154.0, 124.0))
    scene = shape_scenes.Scene(200, 160, "gradient", 1, (circle, twin, square))
    assert shape_tasks.referring_expressions(scene) == [
        "the small red circle on the left", "the small red circle on the right",
        "the large blue square"]
    seen = set()
    for k in range(40):
        rng = np.random.default_rng(k)
        turn = shape_tasks.make_turn(scene, "rec", rng)
        seen.add(turn.question)
        expected = {circle: "[0.050, 0.200, 0.140, 0.290]", twin: "[0.500, 0.220, 0.590, 0.310]",
                    square: "[0.500, 0.450, 0.770, 0.720]"}[turn.shape]
        assert turn.answer == expected
        caption = shape_tasks.make_turn(scene, "caption", rng)
        if caption.shape is square:
            assert caption.question == "Describe the region [0.500, 0.450, 0.770, 0.720]."
            assert caption.answer == "a large blue square"
    assert "Output the coordinate of the small red circle on the left." in seen


def test_record_answers_agree_with_the_scene(validation):
    for i, record in enumerate(validation):
        scene = _scene("validation", i)
        w, h = scene.width, scene.height
        (human, gpt) = record["conversations"]
        question, answer = human["value"], gpt["value"]
        assert answer == record["answer"]
        gt = tuple(float(v) for v in record["gt_box"])
        if record["task"] == "rec":
            expression = re.fullmatch(r"Output the coordinate of (.+)\.", question).group(1)
            (target,) = _resolve(expression, scene)
            assert gt == target.box
            assert _iou(coords.square_to_pixel(coords.parse_first_box(answer), w, h), gt) > 0.9
        elif record["task"] == "caption":
            box = coords.square_to_pixel(coords.parse_first_box(question), w, h)
            (target,) = [s for s in scene.shapes if _iou(s.box, box) > 0.9]
            assert answer == f"a {target.size} {target.color} {target.kind}"
        elif record["task"] == "object":
            assert question.count("<object>") == 1
            np.testing.assert_array_equal(record["objects"], [gt])
            (target,) = [s for s in scene.shapes if s.box == gt]
            if question.startswith("Which"):  # a zoomed crop shows colour and kind, not size
                article = "an" if target.color == "orange" else "a"
                assert answer == f"{article} {target.color} {target.kind}"
            else:
                assert _iou(coords.square_to_pixel(coords.parse_first_box(answer), w, h), gt) > 0.9
        elif record["task"] == "describe":  # every shape once, left to right, by its full name
            assert question == "Describe the image briefly."
            names = re.split(r", | and ", answer[0].lower() + answer[1:-1])
            ordered = sorted(scene.shapes, key=lambda s: s.box[0])
            assert names == [f"a {s.size} {s.color} {s.kind}" for s in ordered]
        else:
            assert record["task"] == "yesno"
            m = re.fullmatch(r"Is there an? (\w+) (\w+) in the image\?\n"
                             r"Answer the question using a single word or phrase\.", question)
            present = any((s.color, s.kind) == m.groups() for s in scene.shapes)
            assert answer == ("Yes" if present else "No")


def test_yesno_balanced_with_hard_negatives(validation):
    yesno = [r for r in validation if r["task"] == "yesno"]
    answers = collections.Counter(r["answer"] for r in yesno)
    assert abs(answers["Yes"] / len(yesno) - 0.5) < 0.03
    hard = 0
    for i, record in enumerate(validation):
        if record["task"] == "yesno" and record["answer"] == "No":
            kind = re.search(r"(\w+) in the image", record["conversations"][0]["value"]).group(1)
            hard += any(s.kind == kind for s in _scene("validation", i).shapes)
    assert 0.3 <= hard / answers["No"] <= 0.9


def test_tasks_balanced_and_eval_single_turn(validation):
    tasks = collections.Counter(r["task"] for r in validation)
    assert tasks == {t: N // len(shape_tasks.TASKS) for t in shape_tasks.TASKS}
    assert all(len(r["conversations"]) == 2 for r in validation)
    train = [shapes.make_record(SEED, "train", i, multi_turn=0.25) for i in range(80)]
    multi = [r for r in train if len(r["conversations"]) > 2]
    assert 0.1 < len(multi) / len(train) < 0.45
    assert all(r["task"] == "mixed" for r in multi)
    for r in train:  # every <object> has its box, and one is the most (max_objects=1 suffices)
        n = sum(t["value"].count("<object>") for t in r["conversations"])
        assert len(r["objects"]) == n <= 1


def test_constant_box_is_near_chance_for_rec(validation):
    boxed = [r for r in validation if r["task"] in ("rec", "object")
             and coords.parse_first_box(r["answer"])]
    guesses = [(0.25, 0.25, 0.75, 0.75), (0.0, 0.0, 1.0, 1.0), (0.4, 0.4, 0.6, 0.6)]
    mean_box = np.mean([coords.parse_first_box(r["answer"]) for r in boxed], axis=0)
    for guess in guesses + [tuple(mean_box)]:
        hits = [_iou(coords.square_to_pixel(guess, r["width"], r["height"]),
                     tuple(float(v) for v in r["gt_box"])) >= 0.5 for r in boxed]
        assert np.mean(hits) < 0.1, guess
    # Guessing one of the scene's shapes at random: ~1 / mean number of shapes (docstring).
    mean_shapes = np.mean([len(_scene("validation", i).shapes) for i in range(N)])
    assert 0.2 < 1 / mean_shapes < 0.45


def test_task_cycle_sets_the_mixture():
    from tgg_jax.data.builders.tgg_shapes import WEIGHTED_TRAIN_TASKS
    records = [shapes.make_record(0, "train", i, render=False, tasks=WEIGHTED_TRAIN_TASKS) for i in range(160)]
    counts = {t: sum(r["task"] == t for r in records) for t in shape_tasks.TASKS}
    assert counts == {"object": 60, "yesno": 40, "rec": 20, "caption": 20, "describe": 20}
    answers = [r["answer"] for r in records if r["task"] == "yesno"]
    assert answers.count("Yes") == answers.count("No") == 20
    # The scene of a record depends only on (seed, split, index), not on the task cycle.
    default = shapes.make_record(0, "train", 3, render=False)
    assert default["width"] == records[3]["width"] and default["task"] != records[3]["task"]
    with pytest.raises(ValueError, match="tasks"):
        shapes.make_record(0, "train", 0, tasks=("rec", "pointing"))


def _asked_more(cycle, count: int, task: str, **turns):
    """(index, the record's turns) for records 0..count-1 of `task` asked with `turns`
    (yesno_turns=4, ...); checks that every other record, and the first turn, is unchanged."""
    for i in range(count):
        one = shapes.make_record(SEED, "train", i, render=False, tasks=cycle)
        many = shapes.make_record(SEED, "train", i, render=False, tasks=cycle, **turns)
        if cycle[i % len(cycle)] != task:
            assert many["conversations"] == one["conversations"]  # other tasks' records do not change
            np.testing.assert_array_equal(many["objects"], one["objects"])
            continue
        assert many["conversations"][:2] == one["conversations"][:2]  # the first turn as before
        yield i, [q["value"] for q in many["conversations"][0::2]], [a["value"] for a in many["conversations"][1::2]]


def test_yesno_turns_ask_different_true_questions_of_one_image():
    from tgg_jax.data.builders.tgg_shapes import WEIGHTED_TRAIN_TASKS as cycle
    later = []
    for i, questions, answers in _asked_more(cycle, 120, "yesno", yesno_turns=4):
        present = {(s.color, s.kind) for s in _scene("train", i).shapes}
        assert len(questions) == 4 and len(set(questions)) == 4
        for q, a in zip(questions, answers):
            color, kind = re.match(r"Is there an? (\w+) (\w+) in the image\?", q).groups()
            assert a == ("Yes" if (color, kind) in present else "No"), (i, q, a)
        later += answers[1:]  # the first answer keeps the balanced alternation
    assert len(later) == 3 * 30 and 0.35 < later.count("Yes") / len(later) < 0.65


def test_rec_turns_ask_for_different_shapes_of_one_image():
    from tgg_jax.data.builders.tgg_shapes import REC_TRAIN_TASKS as cycle
    sizes = []
    for i, questions, answers in _asked_more(cycle, 64, "rec", rec_turns=4):
        scene = _scene("train", i)
        expressions = dict(zip(shape_tasks.referring_expressions(scene), scene.shapes))
        # Up to 4 turns, never more than the scene's shapes, each about a different shape.
        assert len(questions) == min(4, len(scene.shapes)) == len(set(questions))
        for q, a in zip(questions, answers):
            shape = expressions[re.match(r"Output the coordinate of (.+)\.$", q).group(1)]
            box = coords.pixel_to_square(shape.box, scene.width, scene.height)
            np.testing.assert_allclose(coords.parse_first_box(a), box, atol=5e-4)
        sizes.append(len(questions))
    assert len(sizes) == 3 * 8 and max(sizes) == 4 and min(sizes) == 2


@pytest.mark.parametrize("name, tasks", [("yesno_multi", "WEIGHTED_TRAIN_TASKS"),
                                         ("yesno_only", "YESNO_ONLY_TRAIN_TASKS"),
                                         ("rec_multi", "REC_TRAIN_TASKS")])
def test_tilted_configs_hold_the_default_held_out_records(name, tasks):
    from tgg_jax.data.builders import tgg_shapes
    default, tilted = (tgg_shapes.TggShapes(config=c, data_dir="/nonexistent") for c in ("default", name))
    for split in ("validation", "test"):
        for i in (0, 1, 6, 7):
            a = next(default._entry_records(split, shapes_entry(i)))
            b = next(tilted._entry_records(split, shapes_entry(i)))
            assert a["conversations"] == b["conversations"] and a["image"] == b["image"]
    cycle = getattr(tgg_shapes, tasks)
    train = [next(tilted._entry_records("train", shapes_entry(i)))["task"] for i in range(2 * len(cycle))]
    single = [(t, cycle[i % len(cycle)]) for i, t in enumerate(train) if t != "mixed"]
    # Multi-turn records are "mixed"; so are all of a task asked several times per record.
    asked_once = [t for t in cycle if not ((t == "yesno" and tilted.builder_config.yesno_turns > 1)
                                           or (t == "rec" and tilted.builder_config.rec_turns > 1))]
    assert len(single) >= len(asked_once) and all(t == expected for t, expected in single)


def shapes_entry(i):
    return Entry(str(i), "tgg_shapes", i)
