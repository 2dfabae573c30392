"""Released weights in, any run out: converters from other codebases' checkpoints to this one's params.

    python -m t2i_jax.main --mode=convert --source=guided_diffusion --checkpoint=64x64_diffusion.pt \
        --config=configs/adm_imagenet64.py --workdir=runs/adm64_released
    python -m t2i_jax.main --mode=export --config=configs/shapes_default.py --workdir=runs/demo --out=demo.safetensors
    python -m t2i_jax.main --mode=convert --source=t2i_jax --checkpoint=demo.safetensors \
        --config=configs/shapes_default.py --workdir=runs/demo_copy

A converter is converter(state_dict, config) -> params: it maps every one of our param names from a named
source key (common.Assignment) and is refused, with the first offending key and both shapes, on any mismatch.
SOURCES is the one registry of them; the config says which of our architectures the checkpoint is.
"""

from typing import Callable, Dict

from t2i_jax.convert import workdir as workdir_lib

# --source name -> converter(state_dict, config) -> params.
SOURCES: Dict[str, Callable] = {
    "t2i_jax": workdir_lib.exported,  # --mode=export's own files
}


def get(name: str) -> Callable:
  if name not in SOURCES:
    raise ValueError(f"--source={name!r} is not a converter; use one of {', '.join(map(repr, SOURCES))}.")
  return SOURCES[name]
