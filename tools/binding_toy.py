"""A learning diagnostic, not a speed benchmark: how many steps does the tiny Qwen2 need to learn
POPE-style "Is there a COLOUR KIND?" from scratch, with the vision towers taken out of the picture?

The "image" is a grid x grid set of clean feature vectors (a shape cell holds its colour and kind
one-hots scaled by --alpha, every cell noise plus a fixed position vector), projected by the
LLaVA MLP projector into the LLM as the real model does. The sequence mimics tgg_shapes' yes/no
record: filler tokens (the system prompt), the image tokens, the question [Is, COLOUR, KIND, in],
an answer marker, then Yes/No. Answers are balanced per question and per image, with tgg_shapes'
hard negatives (a kind that is present, in a colour it lacks), so only the question x image
interaction predicts them. Tasks (--mix name:weight,...):

    yesno     the question above over the image tokens
    text      the same question over the scene written as words ("c k , c k , ..."), no image
    attribute "what colour is the KIND" / "what kind is the COLOUR one" (unique answers), with the
              looked-up word where yes/no has it; its answer can be read off one matched cell
    easy      yes/no with POPE's "random" negatives (any absent pair) and no per-image balance, so
              presence alone predicts much of it (evaluation stays the balanced hard version)
    list      "what is here" -> the colours present, then the kinds present (sorted): answers that
              follow from the image alone, no question to compare with
    text_list `list` over the scene in words (any task prefixed `text_` runs over the words)
    presence  "is there a COLOUR thing" / "is there a KIND": one attribute, no conjunction
    copy      "what is the word here" -> the question's colour or kind word (no image needed)
    equal     "are these two colour words the same" (no image): the bare comparison
    where     REC in miniature: "where is the COLOUR KIND" -> its row and column tokens

Stages, in this order when asked for: --text_steps (LLM only, --text_mix), --word_align_steps
(the projector regressed onto each cell's word embeddings: distils --word_cells), --align_steps
(image side only, --align_mix), --pre_steps (everything, --pre_mix: a curriculum), then --steps
on --mix with everything trained; --question_loss adds next-token loss on the question's words.
The cells can also be word embeddings (--word_cells, --untied_cells) or learned mixtures of them
(--soft_words), and attention can start mimetic (--mimetic). Results depend on the
initialisation: compare --seed.

Prints held-out yes/no accuracy (512 image questions; in the text stage, 512 over the scene in
words) every 100 steps, and with --probe TASK the held-out accuracy on 512 questions of that task
(answer-token accuracy for where / attribute / copy / list).

    python tools/binding_toy.py --grid 8 --alpha 1 --steps 600
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from tgg_jax.data.shape_tasks import yesno_target  # noqa: E402
from tgg_jax.models import qwen2  # noqa: E402
from tgg_jax.models.projector import Projector  # noqa: E402
from tgg_jax.tiny.model import mimetic_init  # noqa: E402

COLOURS, KINDS, FEATURES = 6, 5, 32
# Token ids: colours 0-5, kinds 6-10, then the words below, fillers from FILLER on.
YES, NO, IS, IN, COMMA, WHAT, THING, ANSWER, EOS, IMAGE, FILLER = range(11, 22)
VOCAB = 64
ROW, COLUMN = 40, 48  # "where" answers: row / column tokens (grid <= 8; fillers reach them past --filler 19)
QUESTION_WORDS = 4  # every question is 4 tokens: [IS, COLOUR, KIND, IN] and the like
QUESTION_TOKENS = 32  # room after the image for the question, answer and padding


def scene(rng, grid, alpha, positions, word_cells=False, noise=0.5):
    """Features [grid*grid, FEATURES] and the (colour, kind) pairs of 2-5 shapes, left to right.

    word_cells: columns 0 and 1 instead hold token ids (a shape's colour and kind; COMMA twice for
    an empty cell), which the model embeds with the LLM's own table: image tokens already aligned
    with the words of the question."""
    n = int(rng.integers(2, 6))
    cells = rng.choice(grid * grid, n, replace=False)
    colour, kind = rng.integers(0, COLOURS, n), rng.integers(0, KINDS, n)
    if word_cells:
        features = np.zeros((grid * grid, FEATURES), np.float32)
        features[:, :2] = cell_words(zip(colour, kind), cells, grid)
    else:
        features = rng.normal(size=(grid * grid, FEATURES)).astype(np.float32) * noise + positions
        features[cells, colour] += alpha
        features[cells, COLOURS + kind] += alpha
    order = np.argsort(cells % grid * grid + cells // grid)
    return features, [(int(colour[i]), int(kind[i])) for i in order], [int(cells[i]) for i in order]


def yesno_question(rng, shapes, positive):
    """tgg_shapes' own choice of what to ask (hard negatives included), on colour / kind ids."""
    colour, kind = yesno_target(set(shapes), range(COLOURS), range(KINDS), rng, positive)
    return [IS, colour, COLOURS + kind, IN], YES if positive else NO


def easy_yesno_question(rng, shapes):
    """POPE "random": a present pair, or any absent pair, each half the time."""
    present = sorted(set(shapes))
    if rng.random() < 0.5:
        colour, kind = present[rng.integers(len(present))]
        return [IS, colour, COLOURS + kind, IN], YES
    absent = [(c, k) for c in range(COLOURS) for k in range(KINDS) if (c, k) not in present]
    colour, kind = absent[rng.integers(len(absent))]
    return [IS, colour, COLOURS + kind, IN], NO


def presence_question(rng, shapes):
    """One attribute only: "is there a COLOUR thing" / "is there a KIND", balanced yes/no. Its
    answer needs the question x image interaction, but no conjunction of two attributes."""
    colours, kinds = {c for c, _ in shapes}, {COLOURS + k for _, k in shapes}
    present, universe = ((colours, range(COLOURS)) if rng.random() < 0.5 or len(kinds) == KINDS
                         else (kinds, range(COLOURS, COLOURS + KINDS)))
    positive = rng.random() < 0.5
    pool = sorted(present) if positive else [v for v in universe if v not in present]
    word = pool[rng.integers(len(pool))]
    question = [IS, word, THING, IN] if word < COLOURS else [IS, THING, word, IN]
    return question, YES if positive else NO


def copy_question(rng):
    """"what is the word in this question" -> that colour or kind word, where presence and yes/no
    questions have theirs: teaches the answer position to gather the question (no image needed)."""
    word = int(rng.integers(COLOURS + KINDS))
    return ([WHAT, word, THING, IN] if word < COLOURS else [WHAT, THING, word, IN]), word


def equal_question(rng):
    """"are these two colour words the same" (balanced), no image: the bare comparison that
    yes/no needs once the looked-up and the asked-about colour sit in the answer position."""
    first = int(rng.integers(COLOURS))
    positive = rng.random() < 0.5
    second = first if positive else int((first + rng.integers(1, COLOURS)) % COLOURS)
    return [IS, first, THING, second], YES if positive else NO


def where_question(rng, shapes, cells, grid):
    """REC in miniature: "where is the COLOUR KIND" -> its row and column tokens, for a pair that
    is unique in the scene (or None). Found by its two words, read off by its position."""
    unique = [i for i, pair in enumerate(shapes) if shapes.count(pair) == 1]
    if not unique:
        return None
    i = unique[rng.integers(len(unique))]
    colour, kind = shapes[i]
    return [WHAT, colour, COLOURS + kind, IN], [ROW + cells[i] // grid, COLUMN + cells[i] % grid]


def attribute_question(rng, shapes):
    """(question, answer) for an attribute with a unique value, or None."""
    options = []
    for c, k in set(shapes):
        if len({cc for cc, kk in shapes if kk == k}) == 1:
            options.append(([WHAT, THING, COLOURS + k, IN], c))
        if len({kk for cc, kk in shapes if cc == c}) == 1:
            options.append(([WHAT, c, THING, IN], COLOURS + k))
    return options[rng.integers(len(options))] if options else None


def example(rng, task, args, positions):
    """(ids [T], labels [T] with -1 where no loss, features, uses_image)."""
    features, shapes, cells = scene(rng, args.grid, args.alpha, positions, args.word_cells, args.noise)
    context = [IMAGE] * args.grid ** 2
    in_words = task.startswith("text")  # "text" is yes/no, "text_list" list, over the scene in words
    task = {"text": "yesno"}.get(task, task.removeprefix("text_"))
    # Tasks not named here (yesno, list) and those without a question for this scene fall back
    # to a yes/no question; `list` then replaces it below.
    ask = {"attribute": lambda: attribute_question(rng, shapes),
           "easy": lambda: easy_yesno_question(rng, shapes),
           "presence": lambda: presence_question(rng, shapes),
           "copy": lambda: copy_question(rng),
           "equal": lambda: equal_question(rng),
           "where": lambda: where_question(rng, shapes, cells, args.grid)}.get(task, lambda: None)
    qa = ask()
    if qa is None:
        qa = yesno_question(rng, shapes, bool(rng.random() < 0.5))
    if in_words:
        context = sum(([c, COLOURS + k, COMMA] for c, k in shapes), [])
    question, answer = qa[0], (qa[1] if isinstance(qa[1], list) else [qa[1]])
    if task == "list":  # replaces the yes/no drawn above (kept: the measured runs' data stream)
        question = [WHAT, THING, THING, IN]
        answer = sorted({c for c, _ in shapes}) + sorted({COLOURS + k for _, k in shapes})
    prompt = [FILLER + i % (VOCAB - FILLER) for i in range(args.filler)]
    # Image then question, SPEC's template order, unless --question_first.
    parts = question + context if args.question_first else context + question
    ids = prompt + parts + [ANSWER] + answer + [EOS]
    # Predicted from ANSWER on: every answer token, then EOS.
    labels = [-1] * (len(ids) - len(answer) - 2) + answer + [EOS, -1]
    if args.question_loss and not args.question_first:
        # Next-token loss on the question's words too (LM pretraining's signal): a positive asks
        # about a pair that is in the scene, so its second word is predictable from the first.
        first = len(prompt) + len(context)
        labels[first:first + len(question)] = ids[first + 1:first + len(question) + 1]
    length = args.filler + args.grid ** 2 + QUESTION_TOKENS
    pad = length - len(ids)
    return (np.array(ids + [0] * pad), np.array(labels + [-1] * pad), features, not in_words)


def make_batch(rng, size, args, positions, task=None, mix=None):
    """`size` examples of `task`, or of tasks drawn from `mix` (default: --mix)."""
    names, weights = zip(*(mix or args.mix))
    p = np.array(weights) / sum(weights)
    rows = [example(rng, task or names[rng.choice(len(names), p=p)], args, positions) for _ in range(size)]
    return tuple(jnp.asarray(np.stack(column)) for column in zip(*rows))


class Toy(nnx.Module):
    def __init__(self, args, rngs):
        config = qwen2.Qwen2Config(vocab_size=VOCAB, hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                                   num_layers=args.layers, num_heads=args.heads, num_kv_heads=2, tie_word_embeddings=True,
                                   max_position_embeddings=256, rope_theta=args.rope_theta, dtype="float32",
                                   initializer_range=args.init_std)
        self.llm = qwen2.Qwen2(config, rngs=rngs)
        self.projector = Projector(FEATURES, args.hidden, rngs=rngs, init_std=args.init_std)
        self.image_start = args.filler + (QUESTION_WORDS if args.question_first else 0)
        self.image_tokens = args.grid ** 2
        self.word_cells = args.word_cells
        # --soft_words: each cell is a mixture of the LLM's word embeddings (two softmaxes over
        # the vocabulary, for colour and kind), chosen by a learned map of its features.
        self.to_words = (nnx.Linear(FEATURES, 2 * VOCAB, rngs=rngs,
                                    kernel_init=nnx.initializers.normal(args.init_std))
                         if args.soft_words else None)
        # --untied_cells: the cells' word vectors come from a table of their own, not the LLM's.
        self.cell_table = (nnx.Embed(VOCAB, args.hidden, rngs=rngs,
                                     embedding_init=nnx.initializers.normal(args.init_std))
                           if args.untied_cells else None)

    def __call__(self, ids, features, uses_image):
        embeds = self.llm.embed(ids)
        s, n = self.image_start, self.image_tokens
        if self.word_cells:
            words = features[..., :2].astype(jnp.int32)
            embed = self.cell_table or self.llm.embed
            cells = embed(words[..., 0]) + embed(words[..., 1])
        elif self.to_words is not None:
            weights = jax.nn.softmax(self.to_words(features).reshape(*features.shape[:-1], 2, VOCAB))
            cells = (weights @ self.llm.embed_tokens.embedding[...]).sum(-2)
        else:
            cells = self.projector(features)
        image = jnp.where(uses_image[:, None, None], cells, embeds[:, s:s + n])
        embeds = embeds.at[:, s:s + n].set(image)  # text rows have no image: unchanged there
        positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
        return self.llm(inputs_embeds=embeds, positions=positions, segment_ids=jnp.ones_like(ids))[0]


def cell_words(shapes, cells, grid):
    """[grid*grid, 2] token ids: each shape cell's colour and kind, COMMA twice for an empty one."""
    words = np.full((grid * grid, 2), COMMA)
    for (colour, kind), cell in zip(shapes, cells):
        words[cell] = colour, COLOURS + kind
    return words


def word_align(model, args, rng, positions):
    """--word_align_steps: the projector alone regresses each cell's features onto the sum of its
    words' embeddings (the LLM's table, held fixed), i.e. distils --word_cells into the projector.
    An upper bound on what an alignment stage can give, since it is told each cell's words."""
    optimizer = nnx.Optimizer(model, optax.adam(args.word_align_lr), wrt=nnx.PathContains("projector"))

    @nnx.jit
    def step_fn(model, optimizer, features, words):
        def loss_fn(model):
            target = jax.lax.stop_gradient(model.llm.embed(words[..., 0]) + model.llm.embed(words[..., 1]))
            cells = model.projector(features)
            if args.word_align_bag:  # told only the scene's bag of words, not which cell holds which
                cells, target = cells.mean(1), target.mean(1)
            return ((cells - target) ** 2).mean() / (target ** 2).mean()
        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.PathContains("projector")))(model)
        optimizer.update(model, grads)
        return loss

    for step in range(1, args.word_align_steps + 1):
        scenes = [scene(rng, args.grid, args.alpha, positions, False, args.noise) for _ in range(args.batch)]
        features = np.stack([f for f, _, _ in scenes])
        words = np.stack([cell_words(shapes, cells, args.grid) for _, shapes, cells in scenes])
        loss = step_fn(model, optimizer, jnp.asarray(features), jnp.asarray(words))
        if step % 100 == 0:
            print(f"word-align step {step} relative squared error {float(loss):.4f}", flush=True)


def parse_mix(text: str) -> list[tuple[str, float]]:
    """"yesno:1,list:2" -> [("yesno", 1.0), ("list", 2.0)]."""
    return [(name, float(weight)) for name, weight in (item.split(":") for item in text.split(","))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mix", default="yesno:1", help="task:weight,... of the tasks listed above")
    p.add_argument("--grid", type=int, default=8, help="image tokens per side (tiny default: 8)")
    p.add_argument("--alpha", type=float, default=1.0, help="attribute signal against noise 0.5")
    p.add_argument("--noise", type=float, default=0.5, help="per-cell feature noise (std)")
    p.add_argument("--position_scale", type=float, default=0.5, help="std of the fixed position vectors")
    p.add_argument("--filler", type=int, default=12, help="tokens before the image (system prompt)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--init_std", type=float, default=0.05)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--question_first", action="store_true",
                   help="question before the image tokens (the image can then attend to it)")
    p.add_argument("--word_cells", action="store_true",
                   help="cells as summed word embeddings of their colour and kind (no projector)")
    p.add_argument("--untied_cells", action="store_true",
                   help="with --word_cells: a separate embedding table for the cells")
    p.add_argument("--soft_words", action="store_true",
                   help="cells as learned mixtures of the LLM's word embeddings (no MLP projector)")
    p.add_argument("--question_loss", action="store_true",
                   help="also train next-token prediction on the question's words (not with --question_first)")
    p.add_argument("--seed", type=int, default=0, help="model init and training data stream")
    p.add_argument("--mimetic", type=float, default=0.0,
                   help="query heads start equal to their key heads times this gain (0: off)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--rope_theta", type=float, default=1e6, help="Qwen2.5 uses 1e6")
    p.add_argument("--adam_b2", type=float, default=0.999)
    p.add_argument("--weight_decay", type=float, default=0.0)
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    p.add_argument("--text_steps", type=int, default=0,
                   help="first train only the LLM this many steps on --text_mix (scenes in words)")
    p.add_argument("--text_mix", default="text:1,text_list:1")
    p.add_argument("--align_steps", type=int, default=0,
                   help="first train only the image side (LLM frozen) this many steps on --align_mix")
    p.add_argument("--align_mix", default="list:1")
    p.add_argument("--word_align_steps", type=int, default=0,
                   help="regress the projector's cells onto their words' embeddings this many steps "
                        "(after --text_steps, before --align_steps)")
    p.add_argument("--word_align_bag", action="store_true",
                   help="--word_align_steps on the means over cells: a caption's words, not each cell's")
    p.add_argument("--word_align_lr", type=float, default=3e-3, help="Adam's lr for --word_align_steps")
    p.add_argument("--pre_steps", type=int, default=0,
                   help="first train everything this many steps on --pre_mix (a curriculum)")
    p.add_argument("--pre_mix", default="attribute:1,equal:1")
    p.add_argument("--probe", default="", help="also print held-out accuracy on this task (any of --mix's)")
    args = p.parse_args()
    args.mix, args.align_mix, args.text_mix, args.pre_mix = (
        parse_mix(m) for m in (args.mix, args.align_mix, args.text_mix, args.pre_mix))

    positions = np.random.default_rng(1).normal(size=(args.grid ** 2, FEATURES)).astype(np.float32) * args.position_scale
    model = Toy(args, nnx.Rngs(args.seed))
    if args.mimetic:
        mimetic_init(model.llm, args.mimetic)
    lr = optax.linear_schedule(0.0, args.lr, args.warmup) if args.warmup else args.lr

    def make_optimizer(wrt):
        return nnx.Optimizer(model, optax.adamw(lr, b2=args.adam_b2, weight_decay=args.weight_decay), wrt=wrt)

    @nnx.jit(static_argnames="wrt")
    def train_step(model, optimizer, ids, labels, features, uses_image, wrt=nnx.Param):
        def loss_fn(model):
            logits = model(ids, features, uses_image)
            mask = labels >= 0
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
            return (losses * mask).sum() / mask.sum()
        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt))(model)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def yesno_accuracy(model, ids, labels, features, uses_image):
        logits = model(ids, features, uses_image)
        asked = (labels == YES) | (labels == NO)
        predicted = jnp.where(logits[..., YES] > logits[..., NO], YES, NO)
        return ((predicted == labels) & asked).sum() / asked.sum()

    @nnx.jit
    def answer_accuracy(model, ids, labels, features, uses_image):
        """Argmax accuracy over answer tokens (EOS not counted), for probes that are not yes/no."""
        asked = (labels >= 0) & (labels != EOS)
        return ((model(ids, features, uses_image).argmax(-1) == labels) & asked).sum() / asked.sum()

    answer_tasks = ("where", "attribute", "copy", "list")
    probe_accuracy = answer_accuracy if args.probe.removeprefix("text_") in answer_tasks else yesno_accuracy

    rng = np.random.default_rng(args.seed)
    held_out = make_batch(np.random.default_rng(99), 512, args, positions, task="yesno")
    probe = make_batch(np.random.default_rng(97), 512, args, positions, task=args.probe) if args.probe else None
    start = time.time()

    def stage(name, steps, mix, wrt, test):
        """`steps` steps on `mix` updating only `wrt`, printing yes/no accuracy on `test`."""
        optimizer = make_optimizer(wrt)
        for step in range(1, steps + 1):
            loss = train_step(model, optimizer, *make_batch(rng, args.batch, args, positions, mix=mix), wrt=wrt)
            if step % 100 == 0:
                accuracy = float(yesno_accuracy(model, *test))
                extra = f" {args.probe} {float(probe_accuracy(model, *probe)):.3f}" if args.probe else ""
                print(f"{name}step {step} loss {float(loss):.3f} held-out yes/no accuracy {accuracy:.3f}"
                      f"{extra} ({time.time() - start:.0f} s)", flush=True)

    if args.text_steps:
        # A text-pretrained LLM in miniature: the scene written as words, no projector.
        held_out_text = make_batch(np.random.default_rng(98), 512, args, positions, task="text")
        stage("text ", args.text_steps, args.text_mix, nnx.All(nnx.Param, nnx.PathContains("llm")),
              held_out_text)
    if args.word_align_steps:
        word_align(model, args, rng, positions)
    if args.align_steps:
        # Stage 1 in miniature: only the image side learns (the projector, or --soft_words' map
        # or --untied_cells' table), the LLM stays as it is.
        stage("align ", args.align_steps, args.align_mix,
              nnx.All(nnx.Param, nnx.Not(nnx.PathContains("llm"))), held_out)
    if args.pre_steps:
        stage("pre ", args.pre_steps, args.pre_mix, nnx.Param, held_out)
    stage("", args.steps, args.mix, nnx.Param, held_out)


if __name__ == "__main__":
    main()
