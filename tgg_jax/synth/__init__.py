"""tgg-synth: the multi-scale fine-grained data synthesis pipeline of the paper's §3.2.

Per image: object recognition (an MLLM lists the objects, L1) -> grounding (a detector boxes each
listed object, S1) -> relation extraction (triples, L2) -> QA generation with task-specific
prompts -> records of four families (stage 2: image_box, text_image; stage 3:
grounding_conversations, grounding_descriptions) -> filters. Every intermediate goes into one
JSONL line per image (tgg_jax.synth.store), which `merge` turns into LLaVA-format JSON files.

Modules, bottom up: prompts, schema, filters, families (pure functions); client (async
OpenAI-protocol chat client), detectors; steps (one function per step); pipeline (the async run
over a shard); store, merge; shapes_server (a local chat-completions server answering from
tgg_shapes' ground truth); cli.
"""
