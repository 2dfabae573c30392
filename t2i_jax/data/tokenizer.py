"""Tokenizers: the offline captioned-shapes tokenizer, or any Hugging Face tokenizer, and caption batching.

The shapes tokenizer is a word-level vocabulary over every word the caption
templates can produce, trained once with `tokenizers` and shipped as
assets/shapes_tokenizer.json (tests/data/test_tokenizer.py checks the shipped file
equals a fresh training); it loads through transformers' PreTrainedTokenizerFast
with no network. Real runs pass a Hugging Face tokenizer name or local path.
"""

import os
import re
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np

from t2i_jax.data import captions

# Captions cut to the context, per context length: {context_length: [captions cut, captions read, longest]}.
# A run tokenizes every batch, so a truncation is warned once and then counted, like Python's own warning
# registry; `truncation_report` gives the count.
_TRUNCATED = {}

ASSET_PATH = os.path.join(os.path.dirname(__file__), "assets", "shapes_tokenizer.json")
PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"


def _caption_corpus() -> list:
  """Every word the caption templates, synonyms and names can produce, as short texts."""
  texts = list(captions.COLORS) + list(captions.SHAPES) + list(captions.SIZES)
  for group in (captions.SIZE_WORDS, captions.SHAPE_WORDS, captions.POSITION_PHRASES, captions.RELATION_PHRASES):
    for options in group:
      texts.extend(options)
  for template in captions.SINGLE_TEMPLATES + captions.PAIR_TEMPLATES:
    texts.append(re.sub(r"\{[^}]*\}", " ", template))
  return texts + ["a", "an", "the"]


def train_shapes_tokenizer():
  """A word-level `tokenizers.Tokenizer` over the captions' vocabulary (lower-cased, punctuation split off)."""
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

  tok = Tokenizer(models.WordLevel(unk_token=UNK))
  tok.normalizer = normalizers.Lowercase()
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  trainer = trainers.WordLevelTrainer(special_tokens=[PAD, UNK, EOS], min_frequency=1)
  tok.train_from_iterator(sorted(set(_caption_corpus())), trainer=trainer)
  # An end-of-text token after every caption: its state summarises the caption in a causal encoder.
  tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, tok.token_to_id(EOS))])
  return tok


def load_tokenizer(name_or_path: Optional[str] = None):
  """A PreTrainedTokenizerFast: the shipped shapes tokenizer for None or "shapes", else from_pretrained."""
  from transformers import AutoTokenizer, PreTrainedTokenizerFast

  if name_or_path in (None, "shapes"):
    return PreTrainedTokenizerFast(tokenizer_file=ASSET_PATH, pad_token=PAD, unk_token=UNK, eos_token=EOS)
  return AutoTokenizer.from_pretrained(name_or_path)


def tokenize(tokenizer, texts: Sequence[str], context_length: int) -> Tuple[np.ndarray, np.ndarray]:
  """Captions -> (tokens int32 [B, context_length], mask bool [B, context_length]), padded at the end.

  An empty caption raises a ValueError (use the model's null condition for
  "no caption"); a caption longer than the context is truncated with a warning.
  """
  texts = list(texts)
  for i, text in enumerate(texts):
    if not isinstance(text, str) or not text.strip():
      raise ValueError(f"caption {i} is empty ({text!r}); give a non-empty prompt.")
  full = tokenizer(texts, add_special_tokens=True)["input_ids"]
  too_long = [i for i, ids in enumerate(full) if len(ids) > context_length]
  counts = _TRUNCATED.setdefault(context_length, [0, 0, 0])
  if too_long and not counts[0]:
    warnings.warn(
        f"captions {too_long[:5]} have more than {context_length} tokens and were truncated to the model's "
        f"context ({max(len(full[i]) for i in too_long)} tokens at most); raise data.context_length (and the "
        "text encoder's) to keep their last words. Said once; later truncations are counted.")
  counts[0] += len(too_long)
  counts[1] += len(texts)
  counts[2] = max([counts[2]] + [len(full[i]) for i in too_long])
  # GPT-2's BPE (GLIDE's) has no pad token; GLIDE pads with its end-of-text token, masked out.
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
  tokens = np.full((len(texts), context_length), pad or 0, np.int32)
  mask = np.zeros((len(texts), context_length), bool)
  for i, ids in enumerate(full):
    ids = ids[:context_length]
    tokens[i, :len(ids)] = ids
    mask[i, :len(ids)] = True
  return tokens, mask


def truncation_report(reset: bool = True) -> Optional[str]:
  """One line counting the captions `tokenize` cut to their context since the last report (None if none)."""
  lines = [f"{cut:,} of {read:,} captions tokenized ({100 * cut / read:.1f}%) had more than {context} tokens "
           f"(up to {longest}) and lost their end" for context, (cut, read, longest) in sorted(_TRUNCATED.items())
           if cut]
  if reset:
    _TRUNCATED.clear()
  return "; ".join(lines) or None


def _word_tokens(tokenizer, texts: Sequence[str]) -> List[List[Tuple[str, bool]]]:
  """Per text, (the text a token covers, whether it is the unknown token) for every token that covers text.

  Nothing is unknown to a tokenizer without an unknown token of its own (a byte-level BPE such as GPT-2's,
  whose "unknown" token is its end of text).
  """
  unk = tokenizer.unk_token_id
  if unk in (tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id):
    unk = None
  encoded = tokenizer(list(texts), return_offsets_mapping=True)
  return [[(text[a:b], unk is not None and i == unk) for i, (a, b) in zip(ids, offsets) if b > a]
          for text, ids, offsets in zip(texts, encoded["input_ids"], encoded["offset_mapping"])]


def unknown_words(tokenizer, texts: Sequence[str]) -> List[List[str]]:
  """Per text, the words the tokenizer reads as its unknown token."""
  return [[word for word, unknown in tokens if unknown] for tokens in _word_tokens(tokenizer, texts)]


def check_prompts(tokenizer, prompts: Sequence[str]) -> None:
  """Warns naming the words of the prompts outside the tokenizer's vocabulary; a ValueError if a prompt
  has no known word (the model would see nothing but unknown tokens)."""
  named = set()
  for prompt, tokens in zip(prompts, _word_tokens(tokenizer, prompts)):
    if tokens and all(unknown for _, unknown in tokens):
      raise ValueError(f"no word of the prompt {prompt!r} is in the tokenizer's vocabulary; use the words the "
                       "model was trained on (e.g. 'a large red circle in the middle').")
    named |= {word for word, unknown in tokens if unknown}
  if named:
    warnings.warn(f"prompt word(s) outside the tokenizer's vocabulary, read as unknown tokens: "
                  f"{', '.join(map(repr, sorted(named)))}.")
