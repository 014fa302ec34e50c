"""tgg-predict: the answer to one question about one image, boxes drawn, clear errors."""

import os

import pytest
from flax import nnx
from PIL import Image

from tests.evals import fake_data
from tgg_jax import predict
from tgg_jax.checkpoint import load_config
from tgg_jax.data.example_spec import ExampleSpec
from tgg_jax.data.tokenizer import load_tokenizer
from tgg_jax.inference import answer, checkpoint_tokenizer, prompt_inputs
from tgg_jax.models.tgg import TinyGroundingGPT
from tgg_jax.visualize import PRED_COLOR, TRUE_COLOR


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(workdir, step dir, parameters) of a random tiny checkpoint in the trainer's layout."""
    workdir = str(tmp_path_factory.mktemp("train"))
    step_dir, params = fake_data.make_checkpoint(workdir)
    return workdir, step_dir, params


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    """A tgg_shapes scene (non-square PNG) and the pixel box of an object in it."""
    record = fake_data.open_source("", "test", "")[2]  # an <object> question
    path = str(tmp_path_factory.mktemp("img") / "scene.png")
    with open(path, "wb") as f:
        f.write(record["image"])
    return path, record["objects"][0].tolist()


def reference_answer(workdir, step_dir, params, image_path, prompt, boxes, max_new_tokens):
    """The saved parameters put into a model by hand (no Orbax) and asked through
    tgg_jax.inference directly."""
    config = load_config(os.path.dirname(step_dir))
    tokenizer = load_tokenizer(os.path.join(workdir, "tokenizer"))
    model = nnx.eval_shape(lambda: TinyGroundingGPT(config, rngs=nnx.Rngs(0)))
    state = nnx.state(model, nnx.Param)
    state.replace_by_pure_dict(params)
    nnx.update(model, state)
    spec = ExampleSpec(image_size=config.image_size, image_tokens=config.image_tokens,
                       object_tokens=config.object_tokens, max_length=256, max_objects=len(boxes))
    with open(image_path, "rb") as f:
        item = prompt_inputs([{"from": "human", "value": prompt}], f.read(), boxes, tokenizer, spec)
    return answer(model, [item], tokenizer, max_new_tokens=max_new_tokens)[0]


def test_prints_the_answer_and_draws_the_boxes(trained, image_file, tmp_path, capsys):
    workdir, step_dir, params = trained
    path, box = image_file
    prompt = "Which shape is shown in <object>?"
    out = str(tmp_path / "out.png")
    predict.main(["--checkpoint", step_dir, "--image", path, "--prompt", prompt,
                  "--object", ",".join(str(v) for v in box), "--out", out, "--max_new_tokens", "6"])
    printed = capsys.readouterr().out
    expected = reference_answer(workdir, step_dir, params, path, prompt, [box], 6)
    assert printed == expected + "\n"
    drawn = Image.open(out)
    width, height = Image.open(path).size
    assert drawn.format == "PNG" and drawn.width == 2 * width and drawn.height > 2 * height
    x1, y1, _, y2 = box  # the object's left edge, in green, at twice the size
    assert drawn.convert("RGB").getpixel((int(2 * x1), int(y1 + y2))) == TRUE_COLOR


def test_answer_boxes_are_drawn_where_they_point(tmp_path):
    """60x40 image: padded square 60, y offset 10. [0.1, 0.25, 0.5, 0.75] -> pixels
    (6, 5, 30, 35), drawn at twice the size: left edge x = 12, y from 10 to 70."""
    image = Image.new("RGB", (60, 40), (255, 255, 255))
    out = str(tmp_path / "boxes.png")
    boxes = predict.draw_answer(image, "It is at [0.100, 0.250, 0.500, 0.750].", [(40, 2, 58, 20)],
                                "title", out)
    assert boxes == [pytest.approx((6.0, 5.0, 30.0, 35.0))]
    drawn = Image.open(out).convert("RGB")
    assert drawn.getpixel((12, 40)) == PRED_COLOR and drawn.getpixel((11, 40)) == (255, 255, 255)
    assert drawn.getpixel((80, 20)) == TRUE_COLOR  # the object's left edge, x = 2 * 40


@pytest.mark.parametrize("args, message", [
    (["--image", "/nonexistent/scene.png"], "--image /nonexistent/scene.png: no such file"),
    (["--object", "1,2,3"], "expected four numbers"),
    (["--prompt", "Is <object> red?", "--object", "1,2,3,4", "--object", "5,6,7,8"],
     "the prompt has 1 <object> but 2 --object boxes"),
])
def test_bad_input_is_a_clear_error(trained, image_file, args, message):
    _, step_dir, _ = trained
    base = {"--checkpoint": step_dir, "--image": image_file[0], "--prompt": "What is this?"}
    argv = [x for k, v in base.items() if k not in args for x in (k, v)] + args
    with pytest.raises(SystemExit) as exit_info:
        predict.main(argv)
    assert message in str(exit_info.value.code)


def test_a_corrupt_image_names_the_file(trained, tmp_path):
    _, step_dir, _ = trained
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--checkpoint", step_dir, "--image", str(path), "--prompt", "What is this?"])
    assert f"{path}: cannot decode image" in str(exit_info.value.code)


def test_missing_tokenizer_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass --tokenizer DIR"):
        checkpoint_tokenizer(str(tmp_path / "ckpt"))
