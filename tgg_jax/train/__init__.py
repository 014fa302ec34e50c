"""tgg_jax.train"""
