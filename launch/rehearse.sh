#!/usr/bin/env bash
# The real path in miniature, exactly as a user walks it: raw files in their public release
# layouts -> tgg-data build -> tgg-convert import-hf -> tgg-train stages 1a, 1b, 2, 3 (the shipped
# configs; only paths, steps, batch and this machine's data workers on the command line) ->
# tgg-eval with every eval config -> tgg-convert export-hf -> a transformers load.
#
#   bash launch/rehearse.sh [ROOT]        (STEPS=3 BATCH=2 LIMIT=2 by default)
#
# The raw files and the Hugging Face checkpoints are tiny stand-ins written by
# tests/rehearsal/fixtures.py (random towers and LLM, the real Qwen2.5 tokenizer), and tgg-synth
# makes the synthesised sets from tgg_shapes scenes; with real downloads and a real MLLM endpoint
# in their place these are the README's commands. tests/rehearsal/check.py then checks
# what each stage changed, where it started, the losses, the evals and the export.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(realpath -m "${1:-/tmp/tgg_rehearsal}")
STEPS=${STEPS:-3} BATCH=${BATCH:-2} LIMIT=${LIMIT:-2}
RAW=$ROOT/raw DATA=$ROOT/tensorflow_datasets RUNS=$ROOT/runs
mkdir -p "$ROOT/logs"
step() { echo "== $*"; }

step "raw files and Hugging Face checkpoints"
python -m tests.rehearsal.fixtures "$ROOT"

step "tgg-synth: the stage 2 and 3 sets the paper synthesised (shapes backend)"
# A local chat-completions server answering from tgg_shapes' ground truth stands in for the MLLM;
# the scenes' own boxes stand in for the detector (docs/data_engine.md).
PORT=$(python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
tgg-synth shapes_images --out "$RAW/synth_images" --count 12 2>/dev/null
tgg-synth serve_shapes --image_root "$RAW/synth_images" --port "$PORT" 2>"$ROOT/logs/synth_server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
python -c "import socket, sys, time
for _ in range(100):
    try: socket.create_connection(('127.0.0.1', $PORT), 1); sys.exit(0)
    except OSError: time.sleep(0.2)
sys.exit('the shapes server did not start')"
SYNTH=(--config configs/synth/default.py:shapes --image_root "$RAW/synth_images"
       --workdir "$RAW/synth" --config.mllm.base_url="http://127.0.0.1:$PORT/v1")
tgg-synth run "${SYNTH[@]}" 2>"$ROOT/logs/synth_run.log" | tail -n 2
tgg-synth merge "${SYNTH[@]}" 2>>"$ROOT/logs/synth_run.log" | tail -n 4
kill $SERVER

step "tgg-data build: every dataset the stage and eval configs name"
build() { tgg-data build "$@" --data_dir "$DATA" | tail -n 3; }
build llava_conversations --config pretrain --raw_dir "$RAW/LLaVA-Pretrain"
build llava_conversations --config pretrain_instruct --raw_dir "$RAW/LLaVA-Pretrain"
for c in refcoco refcoco+ refcocog; do build refcoco --config $c --raw_dir "$RAW/refer/data"; done
build visual_genome --raw_dir "$RAW/visual_genome"
for c in image_box text_image grounding_conversations grounding_descriptions; do
  build llava_conversations --config $c --raw_dir "$RAW/synth" --image_root "$RAW/synth_images"
done
build llava_conversations --config sharegpt4v_mix665k --raw_dir "$RAW/playground/data"
build flickr30k_entities --raw_dir "$RAW/flickr30k_entities" --image_root "$RAW/flickr30k-images"
build pope --raw_dir "$RAW/eval/pope" --image_root "$RAW/coco/val2014"
for name in vqav2 gqa scienceqa mmbench; do build $name --raw_dir "$RAW/eval/$name"; done
build mme --raw_dir "$RAW/eval/MME"
build llava_bench --raw_dir "$RAW/eval/llava-bench-in-the-wild"

step "tgg-convert import-hf"
CKPT=$ROOT/checkpoints/tgg_0.5b_hf
tgg-convert import-hf --llm "$ROOT/hf/qwen2.5" --clip "$ROOT/hf/clip" --dinov2 "$ROOT/hf/dinov2" \
  --out "$CKPT" 2>/dev/null
tgg-predict --checkpoint "$CKPT" --image "$RAW/coco/val2014/COCO_val2014_000000000500.jpg" \
  --prompt "Output the coordinate of the square." --max_new_tokens 8 2>/dev/null

step "tgg-train: stages 1a -> 1b -> 2 -> 3"
FROM=$CKPT
for stage in stage1_pretrain stage1_finetune stage2 stage3; do
  if ! tgg-train --config "configs/$stage.py:0.5b" --workdir "$RUNS/$stage" \
      --config.init_from="$FROM" --config.data.data_dir="$DATA" \
      --config.total_steps="$STEPS" --config.batch_size="$BATCH" --config.data.worker_count=0 \
      > "$ROOT/logs/$stage.log" 2>&1; then
    tail -n 30 "$ROOT/logs/$stage.log"; exit 1
  fi
  grep -E "^(preflight|model|parameters|note|schedule|datasets|  [a-z])" "$ROOT/logs/$stage.log"
  FROM=$RUNS/$stage/checkpoints
done

step "tgg-eval: every eval config"
for cfg in rec.py:refcoco rec.py:refcoco+ rec.py:refcocog pope.py vqav2.py:val gqa.py \
           scienceqa.py mme.py mmbench.py:dev llava_bench.py; do
  name=$(echo "$cfg" | sed -e 's/\.py//' -e 's/:/_/')
  tgg-eval --config "configs/eval/$cfg" --checkpoint "$RUNS/stage3/checkpoints" \
    --workdir "$ROOT/eval/$name" --config.data_dir="$DATA" --config.limit="$LIMIT" \
    --config.max_new_tokens=16 2>&1 | tail -n 2
done

step "tgg-convert export-hf, then transformers loads it"
tgg-convert export-hf --checkpoint "$RUNS/stage3/checkpoints" --out "$ROOT/export"
STEPS=$STEPS python -m tests.rehearsal.check "$ROOT"
