"""t2i_jax: text-to-image diffusion in JAX/Flax, from DDPM to unCLIP."""

__version__ = "0.1.0"
