"""The embedded CPU demo: a tiny TinyGroundingGPT trained from scratch on tgg_shapes in minutes.

The core trainer knows nothing of it; `configs/tiny.py` names these functions at the trainer's
extension points:

    config.model.preset       tgg_jax.tiny.model:preset              the tgg_tiny() architecture
    config.model.param_init   tgg_jax.tiny.model:param_init          mimetic attention at step 0
    config.data.tokenizer     tgg_jax.tiny.tokenizer:make            a 512-entry BPE on tgg_shapes text
    config.data.prepare       tgg_jax.tiny.data:ensure_built         tgg_shapes generated on first use
    config.init_hook          tgg_jax.tiny.tower_align:ensure_aligned  stage 0, before step 0
    config.final_eval.fn      tgg_jax.tiny.final_eval:evaluate_run   scores, baselines, pictures
"""
