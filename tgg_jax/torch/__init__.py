"""tgg_jax.torch"""
