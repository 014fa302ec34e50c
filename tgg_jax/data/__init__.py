"""tgg_jax.data"""
