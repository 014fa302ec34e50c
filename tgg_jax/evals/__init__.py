"""tgg_jax.evals"""
