"""A small byte-level BPE tokenizer trained on a given corpus, for the embedded CPU default: the
tiny model cannot afford Qwen2.5's 151936-row vocabulary on two CPU cores."""

from __future__ import annotations

from collections.abc import Iterable

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from tgg_jax.data.tokenizer import ENDOFTEXT, IM_END, IM_START, IMAGE_TOKEN, OBJECT_TOKEN, \
    TggTokenizer

SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, IMAGE_TOKEN, OBJECT_TOKEN)


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
