"""Which words of a caption a text U-Net uses: x0 error with the true caption vs one attribute swapped.

For one-object test scenes the model predicts x0 from x_t ~ q(x_t | x0) three-plus-one ways: with
the scene's canonical caption, and with captions where exactly one attribute (colour, shape,
size, position) names another value. error(swapped) / error(true) is 1.0 for a word the model
ignores and grows with how much it relies on it at that noise level. The probe needs no sampling,
so it reads a checkpoint in seconds and shows an attribute taking hold hundreds of steps before
the sampled images follow it (experiments/shapes_default).

For two-object scenes the binding probe asks which object is which: the caption with the relation
flipped (the mirror scene), with the two objects' colours swapped, and with their shapes swapped.
The last two hold exactly the words of the true caption, so a model that reads the caption as a bag
of words scores 1.00 on them however well it draws one object (experiments/shapes_full). Both
tables add the true caption's error with the U-Net's text keys/values zeroed: near 1.00, the
caption reaches the network only through the pooled vector.

  python -m t2i_jax.eval.attribute_probe --workdir=runs/demo [--step=1200] [--raw] [--timesteps=500,850,950]
"""

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax.data import captions, shapes
from t2i_jax.diffusion import gaussian

ATTRIBUTES = (("color", captions.COLORS), ("shape", captions.SHAPES), ("size", captions.SIZES),
              ("position", captions.POSITIONS))
DEFAULT_TIMESTEPS = (300, 500, 700, 850)

# (x_t [B, H, W, C], t int32 [B], prompts: list of B str) -> x0 estimate [B, H, W, C].
PredictX0 = Callable[[jax.Array, jax.Array, List[str]], jax.Array]


def probe_scenes(num: int, seed: int = 0) -> List[captions.Scene]:
  """The first `num` one-object scenes of the dataset's test stream for `seed` (laid out)."""
  scenes, index = [], 0
  while len(scenes) < num:
    scene, _ = shapes.sample_scene("test", seed, index)
    index += 1
    if len(scene.objects) == 1:
      scenes.append(scene)
  return scenes


def swap_attribute(scene: captions.Scene, field: str, rng: np.random.Generator) -> captions.Scene:
  """The one-object scene with `field` set to another value drawn uniformly (for its caption only)."""
  names = dict(ATTRIBUTES)[field]
  obj = scene.objects[0]
  value = (getattr(obj, field) + 1 + int(rng.integers(len(names) - 1))) % len(names)
  return captions.Scene((dataclasses.replace(obj, center=None, **{field: value}),))


def pair_probe_scenes(num: int, seed: int = 0) -> List[captions.Scene]:
  """The first `num` two-object scenes of the test stream whose objects differ in colour and in shape."""
  scenes, index = [], 0
  while len(scenes) < num:
    scene, _ = shapes.sample_scene("test", seed, index)
    index += 1
    if len(scene.objects) == 2 and all(getattr(scene.objects[0], f) != getattr(scene.objects[1], f)
                                       for f in ("color", "shape")):
      scenes.append(scene)
  return scenes


BINDING_SWAPS = ("relation", "color", "shape")


def swap_binding(scene: captions.Scene, kind: str) -> captions.Scene:
  """A two-object scene (for its caption) with "relation" flipped, or "color" / "shape" swapped between objects."""
  a, b = (dataclasses.replace(o, center=None) for o in scene.objects)
  if kind == "relation":
    # RELATIONS pairs each with its mirror: left of / right of (0, 1), above / below (2, 3).
    return captions.Scene((a, b), scene.relation ^ 1)
  if kind not in BINDING_SWAPS:
    raise ValueError(f"kind={kind!r}; the binding probe swaps one of {BINDING_SWAPS}.")
  return captions.Scene((dataclasses.replace(a, **{kind: getattr(b, kind)}),
                         dataclasses.replace(b, **{kind: getattr(a, kind)})), scene.relation)


# The column of `ablated`: the true caption with the model's text keys/values removed.
ABLATED = "no token keys/values"


def _errors(predict_x0: PredictX0, schedule, x0: jax.Array, prompts: Dict[str, List[str]],
            timesteps: Sequence[int], seed: int, ablated: Optional[PredictX0]) -> Dict[int, Dict[str, float]]:
  out = {}
  for t_value in timesteps:
    t = jnp.full((x0.shape[0],), t_value, jnp.int32)
    noise = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), t_value), x0.shape)
    x_t = gaussian.q_sample(schedule, x0, t, noise)
    out[int(t_value)] = {k: float(jnp.mean((predict_x0(x_t, t, p) - x0) ** 2)) for k, p in prompts.items()}
    if ablated is not None:
      out[int(t_value)][ABLATED] = float(jnp.mean((ablated(x_t, t, prompts["true"]) - x0) ** 2))
  return out


def without_token_keys_values(params):
  """The U-Net's params with every attention layer's text keys/values (GLIDE's `encoder_kv`) zeroed.

  The tokens' keys and values become 0, so the image attends partly to nothing and the caption reaches
  the network only through the pooled vector: x0 error ratio ≈ 1 means the tokens' path is unused.
  """
  flat = flax.traverse_util.flatten_dict(params)
  if not any("encoder_kv" in k for k in flat):
    raise ValueError("these params have no encoder_kv layers: the model does not attend to text tokens.")
  return flax.traverse_util.unflatten_dict({k: jnp.zeros_like(v) if "encoder_kv" in k else v
                                            for k, v in flat.items()})


def x0_errors(predict_x0: PredictX0, schedule, scenes: Sequence[captions.Scene], image_size: int,
              timesteps: Sequence[int] = DEFAULT_TIMESTEPS, seed: int = 0,
              ablated: Optional[PredictX0] = None) -> Dict[int, Dict[str, float]]:
  """{t: {"true" | attribute: mean squared x0 error}} over one-object scenes, one noise draw per t shared
  by all captions; with `ablated` (e.g. the model without its token keys/values) also its error, ABLATED."""
  x0 = jnp.asarray(shapes.to_float(np.stack([shapes.render(s.objects, image_size=image_size) for s in scenes])))
  rng = np.random.default_rng(seed)
  prompts = {"true": [captions.caption_for(s) for s in scenes]}
  for field, _ in ATTRIBUTES:
    prompts[field] = [captions.caption_for(swap_attribute(s, field, rng)) for s in scenes]
  return _errors(predict_x0, schedule, x0, prompts, timesteps, seed, ablated)


def binding_x0_errors(predict_x0: PredictX0, schedule, scenes: Sequence[captions.Scene], image_size: int,
                      timesteps: Sequence[int] = DEFAULT_TIMESTEPS, seed: int = 0,
                      ablated: Optional[PredictX0] = None) -> Dict[int, Dict[str, float]]:
  """{t: {"true" | "relation" | "color" | "shape" [| ABLATED]: mean squared x0 error}} over two-object
  scenes (`pair_probe_scenes`), each rendered in its own layout, the captions canonical."""
  x0 = jnp.asarray(shapes.to_float(np.stack([shapes.render(s.objects, s.relation, image_size) for s in scenes])))
  plain = [captions.Scene(tuple(dataclasses.replace(o, center=None) for o in s.objects), s.relation) for s in scenes]
  prompts = {"true": [captions.caption_for(s) for s in plain]}
  for kind in BINDING_SWAPS:
    prompts[kind] = [captions.caption_for(swap_binding(s, kind)) for s in plain]
  return _errors(predict_x0, schedule, x0, prompts, timesteps, seed, ablated)


def model_predictors(stage, params_sets: Sequence, schedule) -> List[PredictX0]:
  """A text U-Net stage's x0 estimate (clipped to [-1, 1], as the samplers do), one PredictX0 per params set
  (e.g. the checkpoint's and `without_token_keys_values` of it), all sharing one compiled function."""
  model, diffusion_config = stage.model, stage.diffusion

  @jax.jit
  def pred(params, x_t, t, tokens, token_mask):
    out = model.apply({"params": params}, x_t, t, tokens=tokens, token_mask=token_mask)
    return gaussian.p_mean_variance(schedule, out, x_t, t, mean_type=diffusion_config.mean_type,
                                    var_type=diffusion_config.var_type, clip_denoised=True)["pred_x0"]

  def bind(params) -> PredictX0:
    def predict(x_t, t, prompts):
      cond = stage.text_cond(prompts)
      return pred(params, x_t, t, jnp.asarray(cond["tokens"]), jnp.asarray(cond["token_mask"]))
    return predict

  return [bind(params) for params in params_sets]


def format_table(errors: Dict[int, Dict[str, float]]) -> str:
  """Markdown: per t, the true caption's x0 error and each swap's error ratio (the columns of `errors`)."""
  fields = [f for f in next(iter(errors.values())) if f != "true"]
  name = lambda f: f if f == ABLATED else f"{f} swapped"
  lines = ["| t | x0 error, true caption | " + " | ".join(f"{name(f)} / true" for f in fields) + " |",
           "|" + "---|" * (2 + len(fields))]
  for t, row in errors.items():
    lines.append(f"| {t} | {row['true']:.4f} | " + " | ".join(f"{row[f] / row['true']:.2f}" for f in fields) + " |")
  return "\n".join(lines)


def run(workdir: str, step=None, use_ema: bool = True, num: int = 96, seed: int = 0,
        timesteps: Sequence[int] = DEFAULT_TIMESTEPS) -> Dict[str, Dict[int, Dict[str, float]]]:
  """Probes a training workdir's checkpoint (the latest, or `step`) with its own config.json.

  Returns {"attributes": x0_errors over one-object scenes, "binding": binding_x0_errors over two-object
  scenes}, `num` scenes each; prints both tables.
  """
  from t2i_jax.pipelines import stage as stage_lib
  from t2i_jax.train import families

  config = stage_lib.read_config(workdir)
  if families.unet.role(config) != "text" or config.data.name not in ("shapes", "shapes_rendered"):
    raise ValueError("the attribute probe reads a text-conditional U-Net trained on captioned shapes.")
  # Checked before the checkpoint is read, so a bad level costs nothing.
  num_timesteps = config.diffusion.num_timesteps
  if not timesteps or not all(0 <= t < num_timesteps for t in timesteps):
    raise ValueError(f"timesteps={tuple(timesteps)}: give one or more in [0, {num_timesteps}).")
  stage = stage_lib.load_stage(workdir, config, step=step, use_ema=use_ema)
  params, got, schedule = stage.params, stage.step, stage.schedule
  predict, ablated = model_predictors(stage, [params, without_token_keys_values(params)], schedule)
  size = config.model.image_size
  errors = x0_errors(predict, schedule, probe_scenes(num, seed), size, timesteps, seed, ablated)
  binding = binding_x0_errors(predict, schedule, pair_probe_scenes(num, seed), size, timesteps, seed, ablated)
  print(f"{workdir} step {got} ({'EMA' if use_ema else 'raw'} params), {num} one-object test scenes")
  print(format_table(errors))
  print(f"\n{num} two-object test scenes: relation flipped, colours swapped, shapes swapped between the objects")
  print(format_table(binding))
  return {"attributes": errors, "binding": binding}


if __name__ == "__main__":
  import argparse

  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
  parser.add_argument("--raw", action="store_true", help="the raw params instead of the EMA")
  parser.add_argument("--num", type=int, default=96)
  parser.add_argument("--timesteps", default=",".join(map(str, DEFAULT_TIMESTEPS)),
                      help="comma-separated noise levels to probe (default: %(default)s)")
  args = parser.parse_args()
  run(args.workdir, args.step, not args.raw, args.num, timesteps=[int(t) for t in args.timesteps.split(",")])
