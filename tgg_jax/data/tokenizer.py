"""Tokenizer: a Hugging Face `tokenizer.json` (Qwen2.5's, or the tiny one) plus the two placeholder
tokens `<image>` and `<object>` (SPEC §1).

User text is always tokenized as plain text: `encode` runs a copy of the tokenizer without any
added tokens, so a caption that happens to contain "<image>" or "<|im_end|>" is spelled out in
ordinary byte-level pieces and can never inject a placeholder or end a turn. Marker and placeholder
ids are inserted directly by `tgg_jax.data.template`, never by tokenizing their strings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import tokenizers

from tgg_jax.spec import IMAGE_TOKEN, IMAGE_TOKEN_ID, OBJECT_TOKEN, OBJECT_TOKEN_ID

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"

# Qwen2.5's last added token (151643 BPE tokens + 22 added); the placeholders take the next two
# ids (tgg_jax.spec).
_QWEN25_LAST_ADDED = ("<|file_sep|>", 151664)

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"


class TggTokenizer:
    """Plain-text encoding, decoding and the ids the chat template needs.

    Attributes: im_start_id, im_end_id, endoftext_id, image_id, object_id (ints), vocab_size
    (entries including added tokens; the model's embedding table may be larger).
    """

    def __init__(self, backend: tokenizers.Tokenizer, config: dict | None = None, *,
                 source: str = ""):
        self.backend = backend
        self.config = dict(config or {})
        self._plain = _without_added_tokens(backend)

        def required(token: str) -> int:
            token_id = backend.token_to_id(token)
            if token_id is None:
                raise ValueError(f"tokenizer {source or '(in memory)'} has no {token!r} token")
            return token_id

        self.im_start_id = required(IM_START)
        self.im_end_id = required(IM_END)
        self.endoftext_id = required(ENDOFTEXT)
        self.image_id = required(IMAGE_TOKEN)
        self.object_id = required(OBJECT_TOKEN)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Plain text -> ids; marker strings in the text are not special (see module doc)."""
        return self._plain.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def save(self, directory: str) -> None:
        """Write tokenizer.json + tokenizer_config.json that `transformers.AutoTokenizer` loads
        with the same ids."""
        os.makedirs(directory, exist_ok=True)
        self.backend.save(os.path.join(directory, TOKENIZER_FILE))
        config = dict(self.config)
        config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
        config.setdefault("eos_token", IM_END)
        config.setdefault("pad_token", ENDOFTEXT)
        config["added_tokens_decoder"] = {
            str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized,
                     "rstrip": t.rstrip, "single_word": t.single_word, "special": t.special}
            for i, t in sorted(self.backend.get_added_tokens_decoder().items())}
        # transformers 5 reads "extra_special_tokens" (4.x's "additional_special_tokens" merged in)
        extra = config.get("extra_special_tokens") or []
        extra = list(extra.values()) if isinstance(extra, dict) else list(extra)
        for token in [*(config.pop("additional_special_tokens", None) or []), IMAGE_TOKEN,
                      OBJECT_TOKEN]:
            if isinstance(token, str) and token not in extra:
                extra.append(token)
        config["extra_special_tokens"] = extra
        with open(os.path.join(directory, CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=2)


def _without_added_tokens(backend: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
    """A copy that knows only the model's vocabulary: added-token strings become plain text."""
    spec = json.loads(backend.to_str())
    spec["added_tokens"] = []
    return tokenizers.Tokenizer.from_str(json.dumps(spec))


def add_placeholder_tokens(backend: tokenizers.Tokenizer) -> None:
    """Append `<image>` then `<object>` as special tokens where absent (in place)."""
    for token in (IMAGE_TOKEN, OBJECT_TOKEN):
        if backend.token_to_id(token) is None:
            backend.add_special_tokens([tokenizers.AddedToken(token, special=True,
                                                              normalized=False)])


def _check_config_ids(backend: tokenizers.Tokenizer, config: dict, source: str) -> None:
    """tokenizer_config.json's added_tokens_decoder must agree with tokenizer.json."""
    for token_id, entry in (config.get("added_tokens_decoder") or {}).items():
        found = backend.token_to_id(entry["content"])
        if found != int(token_id):
            raise ValueError(f"{source}: {CONFIG_FILE} puts {entry['content']!r} at id {token_id} "
                             f"but {TOKENIZER_FILE} has it at {found}")


def _check_qwen25_ids(backend: tokenizers.Tokenizer, source: str) -> None:
    last_token, last_id = _QWEN25_LAST_ADDED
    if backend.token_to_id(last_token) != last_id:
        return  # not a Qwen2.5 vocabulary
    got = (backend.token_to_id(IMAGE_TOKEN), backend.token_to_id(OBJECT_TOKEN))
    if got != (IMAGE_TOKEN_ID, OBJECT_TOKEN_ID):
        raise ValueError(
            f"{source}: Qwen2.5 vocabulary must put {IMAGE_TOKEN} and {OBJECT_TOKEN} at ids "
            f"{IMAGE_TOKEN_ID} and {OBJECT_TOKEN_ID} (unused embedding rows), got {got}; "
            f"the tokenizer has {backend.get_vocab_size(with_added_tokens=True)} entries")


def tokenizer_dir_beside(checkpoint: str) -> str:
    """The tokenizer a checkpoint goes with: the first directory holding tokenizer.json among
    CKPT, CKPT/tokenizer (tgg-convert import-hf) and the trainer's WORKDIR/tokenizer
    (CKPT/../tokenizer, CKPT/../../tokenizer for checkpoints/<step>/)."""
    path = os.path.abspath(os.path.expanduser(checkpoint))
    candidates = [path, os.path.join(path, "tokenizer"),
                  os.path.join(os.path.dirname(path), "tokenizer"),
                  os.path.join(os.path.dirname(os.path.dirname(path)), "tokenizer")]
    for candidate in candidates:
        if os.path.isfile(os.path.join(candidate, TOKENIZER_FILE)):
            return candidate
    raise FileNotFoundError(f"no {TOKENIZER_FILE} for checkpoint {checkpoint} in any of "
                            f"{', '.join(candidates)}")


def load_tokenizer(path: str) -> TggTokenizer:
    """HF tokenizer directory (tokenizer.json, optional tokenizer_config.json) -> TggTokenizer."""
    file = os.path.join(path, TOKENIZER_FILE)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"no {TOKENIZER_FILE} in tokenizer directory {path}")
    try:
        backend = tokenizers.Tokenizer.from_file(file)
    except Exception as e:  # the Rust side raises plain Exception on malformed JSON
        raise ValueError(f"cannot read {file}: {e}") from e
    config = {}
    config_file = os.path.join(path, CONFIG_FILE)
    if os.path.isfile(config_file):
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
        _check_config_ids(backend, config, config_file)
    add_placeholder_tokens(backend)
    _check_qwen25_ids(backend, path)
    return TggTokenizer(backend, config, source=path)
