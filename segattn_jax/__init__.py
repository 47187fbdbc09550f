"""segattn_jax: segmentation, detection and attention systems in JAX/Flax."""
