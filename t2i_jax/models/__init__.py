"""Flax Linen modules: U-Net, text encoder, CLIP, diffusion prior, noisy classifier."""
