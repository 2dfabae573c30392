"""What loading a chain for --mode=eval enters: the loading half of a chain eval (stages read and settings
built) of a runlocal unCLIP chain, traced with sys.setprofile — the t2i_jax modules entered, the
config_keys.complete calls, the calls from pipelines/ and eval/ down into train/, and whether an optimizer or
a loss history is built. It runs on the code before issue 34 (commit 929c912) too, which had
evaluate._chain_sampler. ROOT holds the four runlocal stages (clip, prior, decoder, upsampler) trained two
steps each, e.g. by tests/conftest.py's unclip_runlocal recipe.

  PYTHONPATH=. .venv/bin/python benchmarks/chain_load_trace.py ROOT

Measured 2026-12-07 (issue 34's closing note): before, 19 modules, 4 optimizers built, 27 calls into train/
(10 distinct); after, 21 modules, no optimizer, 18 calls (6 distinct), none for config_keys.
"""
import collections, sys
from tests.conftest import load_config  # noqa
from t2i_jax.eval import evaluate
from t2i_jax.pipelines import text_to_image

root = sys.argv[1]
config = load_config("shapes_unclip:runlocal")
config.unclip.update({f"{n}_workdir": f"{root}/{n}" for n in ("clip", "prior", "decoder", "upsampler")})
settings = [text_to_image.parse_setting("ddim:3:3")]
modules, calls, climbs = set(), collections.Counter(), collections.Counter()

def part(name):
  bits = name.split(".")
  return bits[1] if len(bits) > 1 else ""

def prof(frame, event, arg):
  if event != "call":
    return
  mod = frame.f_globals.get("__name__", "")
  if not mod.startswith("t2i_jax"):
    return
  modules.add(mod)
  calls[f"{mod}.{frame.f_code.co_name}"] += 1
  caller = frame.f_back
  while caller is not None and not caller.f_globals.get("__name__", "").startswith("t2i_jax"):
    caller = caller.f_back
  if caller is not None:
    src = caller.f_globals["__name__"]
    if part(src) in ("pipelines", "eval") and part(mod) == "train" and part(src) != part(mod):
      climbs[f"{src} -> {mod}.{frame.f_code.co_name}"] += 1

def load_new():
  from t2i_jax import config_keys
  from t2i_jax.pipelines import chains
  chain = chains.of(config)
  section = config_keys.complete(config)[chain.section]
  stages = chain.load(section)
  return [chain.settings(section, stages, 0, s) for s in settings]

sys.setprofile(prof)
if hasattr(evaluate, "_chain_sampler"):
  evaluate._chain_sampler(config, settings)
else:
  load_new()
sys.setprofile(None)
complete = sum(v for k, v in calls.items() if k.endswith("config_keys.complete"))
print("modules entered:", len(modules))
print("\n".join("  " + m for m in sorted(modules)))
print("config_keys.complete calls:", complete)
print("optimizer built:", sum(v for k, v in calls.items() if k.endswith("make_optimizer")),
      "loss history:", sum(v for k, v in calls.items() if k.endswith("init_loss_history")))
print("climbs from pipelines/eval into train:", sum(climbs.values()), "distinct:", len(climbs))
print("\n".join(f"  {k} x{v}" for k, v in sorted(climbs.items())))
