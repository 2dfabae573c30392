"""t2i_jax: text-to-image diffusion (DDPM → GLIDE → unCLIP → latent diffusion) in JAX/Flax."""

import setuptools

setuptools.setup(
    name="t2i_jax",
    version="0.1.0",
    description="Text-to-image diffusion in JAX/Flax: DDPM, Improved DDPM, ADM, GLIDE, unCLIP.",
    packages=setuptools.find_packages(include=["t2i_jax", "t2i_jax.*"]),
    python_requires=">=3.10",
    # Ranges are the ones tested; the upper bounds keep a fresh install on APIs we know.
    install_requires=[
        "jax>=0.10.2,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "ml_collections>=1.1,<2",
        "numpy>=2.0,<3",
        "absl-py>=2.0,<3",
        "transformers>=5.0,<6",  # tokenizers only: text encoders are this project's own Flax modules
        "tensorboardX>=2.6,<3",  # TensorBoard event files without TensorFlow
        # Input pipelines: grain over TFDS array_record data sources, no TensorFlow. TFDS encodes and
        # decodes PNG images with pillow when TensorFlow is absent, and needs importlib_resources.
        "grain>=0.2.18,<0.3",
        "array_record>=0.8.6,<0.9",
        "tensorflow-datasets>=4.9.10,<4.10",
        "etils[epath]>=1.15,<2",
        "importlib_resources>=7.1,<8",
        "pillow>=13.0,<14",
    ],
    package_data={"t2i_jax.data": ["assets/*.json"], "t2i_jax.eval": ["assets/*.msgpack"]},
    extras_require={
        "test": ["pytest>=9.0,<10", "pytest-xdist>=3.6,<4"],
        # Preparing real TFDS datasets needs TensorFlow, on a machine with network.
        "prepare": ["tensorflow-datasets>=4.9", "tensorflow>=2.16"],
        # The PyTorch reference for parity checks and benchmarks (CPU build on disk here).
        "torch": ["torch>=2.9,<2.15", "diffusers>=0.35,<1", "dalle2-pytorch>=1.15,<2"],
    },
)
