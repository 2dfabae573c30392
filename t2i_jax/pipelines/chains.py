"""Every chain, in one registry (the protocol: pipelines/chain.py). A new chain is its pipeline module, which
defines its CHAIN, its config section (config_keys.DEFAULTS) and one line here."""

from typing import Optional

from t2i_jax import config_keys
from t2i_jax.pipelines import chain as chain_lib, dalle, glide, latent, unclip

CHAINS = {chain.section: chain for chain in (glide.CHAIN, unclip.CHAIN, latent.CHAIN, dalle.CHAIN)}


def of(config) -> Optional[chain_lib.Chain]:
  """The Chain of a chain config (the one chain section it has), or None for a stage's config."""
  kind = config_keys.chain_kind(config)
  return None if kind is None else CHAINS[kind]
