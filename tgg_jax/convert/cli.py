"""`tgg-convert`: move weights between Hugging Face directories and tgg-jax checkpoints.

    tgg-convert import-hf --llm DIR --clip DIR --dinov2 DIR --out CKPT [--projector FILE]
                          [--tokenizer DIR]     (kept as CKPT/tokenizer; default: the LLM's)
                          [--no-scan_layers]    (layers one by one instead of stacked)
    tgg-convert export-hf --checkpoint CKPT --out DIR [--dtype bfloat16|float32] [--tokenizer DIR]
"""

from __future__ import annotations

import argparse
import os
import sys

from absl import logging

from tgg_jax.checkpoint import save_params
from tgg_jax.convert.export_hf import export_hf
from tgg_jax.convert.import_hf import import_hf
from tgg_jax.data.tokenizer import TOKENIZER_FILE, load_tokenizer
from tgg_jax.errors import UserError
from tgg_jax.spec import IMAGE_TOKEN_ID, OBJECT_TOKEN_ID


def _import(args) -> None:
    params, config = import_hf(args.llm, args.clip, args.dinov2, projector=args.projector,
                               seed=args.seed, scan_layers=args.scan_layers, object_pool=args.object_pool,
                               image_token_id=args.image_token_id, object_token_id=args.object_token_id)
    if args.tokenizer and not os.path.isfile(os.path.join(args.tokenizer, "tokenizer.json")):
        raise UserError(f"--tokenizer {args.tokenizer}: no tokenizer.json there")
    tokenizer = checked_tokenizer(args.tokenizer or args.llm, config)  # before anything is written
    save_params(args.out, params, config)
    if tokenizer is not None:
        tokenizer.save(os.path.join(args.out, "tokenizer"))
    print(f"wrote {args.out} (LLM {config.llm.num_layers} layers x {config.llm.hidden_size}, "
          f"{'tied' if config.llm.tie_word_embeddings else 'untied'} head"
          + ("; tokenizer kept as tokenizer/)" if tokenizer else "; no tokenizer.json found: "
             "export-hf and tgg-predict will need --tokenizer)"))


def checked_tokenizer(source: str, config):
    """The LLM's tokenizer (with <image>/<object> added), to keep as CKPT/tokenizer so that
    training, export and predict on the checkpoint find it; None when `source` has none."""
    if not os.path.isfile(os.path.join(source, TOKENIZER_FILE)):
        return None
    tokenizer = load_tokenizer(source)
    if (tokenizer.image_id, tokenizer.object_id) != (config.image_token_id, config.object_token_id):
        raise UserError(f"the tokenizer in {source} places <image>/<object> at "
                        f"{tokenizer.image_id}/{tokenizer.object_id}, the checkpoint's config at "
                        f"{config.image_token_id}/{config.object_token_id} (--image_token_id)")
    return tokenizer


def _export(args) -> None:
    export_hf(args.checkpoint, args.out, dtype=args.dtype, tokenizer=args.tokenizer)
    print(f"wrote {args.out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tgg-convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import-hf", help="Hugging Face directories -> tgg-jax checkpoint")
    imp.add_argument("--llm", required=True, help="Qwen2.5 directory (Qwen2ForCausalLM)")
    imp.add_argument("--clip", required=True, help="CLIP ViT-L/14-336 directory (CLIPModel or CLIPVisionModel)")
    imp.add_argument("--dinov2", required=True, help="DINOv2-L/14 directory (Dinov2Model)")
    imp.add_argument("--projector", help="safetensors with mm_projector weights; fresh init if absent")
    imp.add_argument("--object_pool", type=int, default=1, help="k x k pooling of object features")
    imp.add_argument("--seed", type=int, default=0, help="seed of a fresh projector")
    imp.add_argument("--image_token_id", type=int, default=IMAGE_TOKEN_ID,
                     help=f"id of <image> (Qwen2.5: {IMAGE_TOKEN_ID})")
    imp.add_argument("--object_token_id", type=int, default=OBJECT_TOKEN_ID,
                     help=f"id of <object> (Qwen2.5: {OBJECT_TOKEN_ID})")
    imp.add_argument("--tokenizer", help="tokenizer directory to keep with the checkpoint "
                                         "(default: the --llm directory's)")
    imp.add_argument("--scan_layers", action=argparse.BooleanOptionalAction, default=True,
                     help="store the layers stacked, as scanned training reads them (a run "
                          "converts either layout on loading)")
    imp.add_argument("--out", required=True, help="output checkpoint directory")
    imp.set_defaults(fn=_import)
    exp = sub.add_parser("export-hf", help="tgg-jax checkpoint -> Hugging Face directories")
    exp.add_argument("--checkpoint", required=True)
    exp.add_argument("--out", required=True)
    exp.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    exp.add_argument("--tokenizer", help="HF tokenizer directory (default: beside the checkpoint, "
                                         "e.g. the run's WORKDIR/tokenizer)")
    exp.set_defaults(fn=_export)
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    try:
        args.fn(args)
    except (UserError, FileNotFoundError, ValueError) as e:  # CheckpointError is a ValueError
        # A wrong path or a checkpoint that is not what it should be: one line, exit 2.
        print(f"tgg-convert: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    sys.exit(main())
