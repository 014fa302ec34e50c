"""Shared by the export and PyTorch-model tests: the tiny random HF parts of tests/hf_reference.py
imported into a tgg-jax checkpoint, a tokenizer that puts <image>/<object> at the ids those parts
use (300/301), and the checkpoint exported back to Hugging Face directories."""

from __future__ import annotations

import dataclasses
import os

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from tests import hf_reference as ref
from tgg_jax.convert import cli
from tgg_jax.convert.export_hf import export_hf
from tgg_jax.data import shapes
from tgg_jax.data.tokenizer import ENDOFTEXT, IM_END, IM_START, TggTokenizer, add_placeholder_tokens


def placeholder_tokenizer() -> TggTokenizer:
    """Byte-level BPE of exactly 300 entries on tgg_shapes text, then <image> = 300 and
    <object> = 301 appended, as Qwen2.5's placeholders follow its own vocabulary."""
    texts = [t["value"] for i in range(48) for t in shapes.make_record(0, "train", i)["conversations"]]
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=ref.IMAGE_ID, min_frequency=2, show_progress=False,
        special_tokens=[tokenizers.AddedToken(t, special=True, normalized=False)
                        for t in (ENDOFTEXT, IM_START, IM_END)],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer=trainer)
    add_placeholder_tokens(backend)
    tok = TggTokenizer(backend, {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": IM_END,
                                 "pad_token": ENDOFTEXT, "clean_up_tokenization_spaces": False})
    assert (tok.image_id, tok.object_id) == (ref.IMAGE_ID, ref.OBJECT_ID)
    return tok


@dataclasses.dataclass
class Exported:
    parts: tuple        # (Qwen2ForCausalLM, CLIPVisionModel, Dinov2Model, nn.Sequential)
    hf: dict            # the parts as saved by transformers: llm, clip, dinov2, projector paths
    checkpoint: str     # tgg-jax checkpoint made by `tgg-convert import-hf`
    tokenizer: str      # tokenizer directory
    out: str            # `tgg-convert export-hf` output


def import_then_export(root: str, tie: bool, max_shard_bytes: int | None = None,
                       scan_layers: bool = True) -> Exported:
    """`tgg-convert import-hf` of fresh random parts (layers stacked, or one by one with
    `scan_layers` False), then `tgg-convert export-hf` (or, to get several shards, export_hf
    with `max_shard_bytes`)."""
    parts = ref.build_parts(tie=tie)
    hf = ref.save_parts(os.path.join(root, "hf"), *parts)
    checkpoint, tok_dir, out = (os.path.join(root, p) for p in ("ckpt", "tokenizer", "export"))
    assert cli.main(["import-hf", "--llm", hf["llm"], "--clip", hf["clip"], "--dinov2", hf["dinov2"],
                     "--projector", hf["projector"], "--image_token_id", str(ref.IMAGE_ID),
                     "--object_token_id", str(ref.OBJECT_ID), "--out", checkpoint]
                    + ([] if scan_layers else ["--no-scan_layers"])) == 0
    placeholder_tokenizer().save(tok_dir)
    if max_shard_bytes is None:
        assert cli.main(["export-hf", "--checkpoint", checkpoint, "--out", out, "--tokenizer", tok_dir]) == 0
    else:
        export_hf(checkpoint, out, tokenizer=tok_dir, max_shard_bytes=max_shard_bytes)
    return Exported(parts, hf, checkpoint, tok_dir, out)
