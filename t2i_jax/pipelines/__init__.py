"""End-to-end text→image programs built on the diffusion core and the models."""
