"""The functional diffusion core: pure, jit-able functions over a Schedule pytree."""

from t2i_jax.diffusion import edm
from t2i_jax.diffusion import gaussian
from t2i_jax.diffusion import guidance
from t2i_jax.diffusion import losses
from t2i_jax.diffusion import samplers
from t2i_jax.diffusion import schedules
from t2i_jax.diffusion import timestep_sampling
