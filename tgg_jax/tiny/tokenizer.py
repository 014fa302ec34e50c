"""The tiny model's tokenizer: a small byte-level BPE trained on tgg_shapes text (the tiny model
cannot afford Qwen2.5's 151936-row vocabulary on two CPU cores).

`make` is what the tiny configs name as their tokenizer (config.data.tokenizer =
"tgg_jax.tiny.tokenizer:make"): the run trains it once and keeps it as WORKDIR/tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from tgg_jax.data.shape_tasks import vocabulary_phrases
from tgg_jax.data.shapes import make_record
from tgg_jax.data.tokenizer import ENDOFTEXT, IM_END, IM_START, TggTokenizer
from tgg_jax.spec import IMAGE_TOKEN, OBJECT_TOKEN, SYSTEM_PROMPT

SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, IMAGE_TOKEN, OBJECT_TOKEN)
VOCAB_SIZE = 512  # at most; the corpus below gives 431 entries


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> TggTokenizer:
    """Byte-level BPE on `texts`; ids 0-4 are the special tokens, then the 256 bytes, then merges.

    Digits are split one per token so that box coordinates ("0.123") are spelled digit by digit
    and every value is learnable from few examples. Same corpus -> same tokenizer.
    """
    minimum = len(SPECIAL_TOKENS) + 256
    if vocab_size < minimum:
        raise ValueError(f"vocab_size must be at least {minimum} (specials + 256 bytes), "
                         f"got {vocab_size}")
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        special_tokens=[tokenizers.AddedToken(t, special=True, normalized=False)
                        for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(list(texts), trainer=trainer)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": IM_END,
              "pad_token": ENDOFTEXT, "bos_token": None, "unk_token": None,
              "clean_up_tokenization_spaces": False}
    return TggTokenizer(backend, config, source="tiny tokenizer")


def corpus(count: int = 2000, seed: int = 0) -> list[str]:
    """Texts to train the tiny tokenizer on: the turns of the first `count` tgg_shapes train
    records (no images drawn), every attribute phrase, and the chat template's system prompt."""
    texts = [turn["value"]
             for i in range(count)
             for turn in make_record(seed, "train", i, multi_turn=0.25, render=False)["conversations"]]
    return texts + vocabulary_phrases() + [SYSTEM_PROMPT]


def make(config) -> TggTokenizer:
    """config.data.tokenizer hook of the tiny configs: the tokenizer trained on `corpus()`."""
    del config
    return train_tiny_tokenizer(corpus(), vocab_size=VOCAB_SIZE)
