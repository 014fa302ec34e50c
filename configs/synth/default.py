"""tgg-synth: the data engine of the paper's §3.2 (docs/data_engine.md).

    tgg-synth run --config configs/synth/default.py --image_root IMAGES --workdir OUT \
        --config.mllm.base_url=http://localhost:8000/v1 --config.mllm.model=Qwen/Qwen2-VL-7B-Instruct
    tgg-synth merge --config configs/synth/default.py --workdir OUT

`--config.x=y` overrides any field below. The `shapes` variant (configs/synth/default.py:shapes)
points at the local server of `tgg-synth serve_shapes` and the annotations backend.
"""

import ml_collections


def get_config(arg: str = ""):
    c = ml_collections.ConfigDict()
    # Images: every image file under image_root (sorted), or the paths listed in image_list
    # (one per line, relative to image_root). Record "image" paths are relative to image_root.
    c.image_root = ""
    c.image_list = ""
    c.families = ("image_box", "text_image", "grounding_conversations", "grounding_descriptions")

    # MLLM steps (L1, L2, QA generation): any OpenAI-compatible chat-completions endpoint.
    c.mllm = ml_collections.ConfigDict()
    c.mllm.base_url = "http://localhost:8000/v1"
    c.mllm.model = "Qwen/Qwen2-VL-7B-Instruct"
    c.mllm.api_key_env = "OPENAI_API_KEY"  # the key is read from this variable, never stored
    c.mllm.temperature = 0.2
    c.mllm.max_tokens = 1024
    c.mllm.seed = 0
    c.mllm.max_in_flight = 64            # requests in flight at once
    c.mllm.requests_per_minute = 0.0     # client-side rate limits; 0 = none
    c.mllm.tokens_per_minute = 0.0
    c.mllm.timeout_s = 120.0             # per request
    c.mllm.max_retries = 6               # on 429, 5xx, timeouts and broken connections
    c.mllm.backoff_base_s = 1.0          # exponential backoff base, with jitter
    c.mllm.backoff_max_s = 60.0
    c.mllm.answer_retries = 1            # new tries when an answer is not JSON or off-schema
    c.mllm.json_mode = False             # send response_format={"type": "json_object"}
    c.mllm.price_input_per_mtok = 0.0    # US$ per million tokens, for the cost estimate
    c.mllm.price_output_per_mtok = 0.0

    # Grounding (S1): grounding_dino (transformers zero-shot detection), rec (a tgg-jax
    # checkpoint answering "Output the coordinate of ..."), or annotations (boxes from the source).
    c.detector = ml_collections.ConfigDict()
    c.detector.backend = "grounding_dino"
    c.detector.model = "IDEA-Research/grounding-dino-tiny"  # HF id or local directory
    c.detector.box_threshold = 0.35       # boxes below this score are dropped from S1
    c.detector.text_threshold = 0.25
    c.detector.device = "cpu"
    c.detector.rec_checkpoint = ""        # backend rec: checkpoint directory
    c.detector.annotations = ""           # backend annotations: JSON {image path: [{phrase, box}]}

    c.prompts = ml_collections.ConfigDict()
    c.prompts.dir = "configs/synth/prompts"
    c.prompts.version = "v1"
    c.max_objects = 12       # L1 entries asked for and kept
    c.max_relations = 12
    c.max_qas = 6
    c.max_rounds = 4

    # Filters (§3.2 "Filter"): a record is kept only if every check passes. Re-applied to stored
    # work without model calls by `tgg-synth run --refilter`.
    c.filters = ml_collections.ConfigDict()
    c.filters.min_area = 0.002        # object-image area / image area, at least
    c.filters.max_area = 0.8          # ... and at most
    c.filters.max_option_iou = 0.5    # IoU between any two object-image options, at most
    c.filters.min_confidence = 0.4    # detector score of every object a record uses, at least
    c.filters.max_boxes_per_phrase = 3  # boxes the detector gave the object's phrase, at most

    # Scale-out: shard i of n (flags --shard_index/--num_shards, else SLURM_ARRAY_TASK_ID /
    # SLURM_ARRAY_TASK_COUNT, else 0 of 1), and the progress line interval.
    c.shard_index = -1
    c.num_shards = 0
    c.progress_every_s = 30.0

    if arg == "shapes":
        # The local shapes server (`tgg-synth serve_shapes`) and the scenes' own boxes.
        c.mllm.base_url = "http://127.0.0.1:8765/v1"
        c.mllm.model = "tgg-shapes"
        c.mllm.max_in_flight = 16
        c.detector.backend = "annotations"
        c.filters.max_boxes_per_phrase = 1  # two shapes of one name: a phrase that is ambiguous
    elif arg:
        raise ValueError(f"unknown synth config variant {arg!r}; expected '' or 'shapes'")
    return c
