"""The offline shapes tokenizer and caption batching."""

import json
import re

import numpy as np
import pytest

from t2i_jax.data import shapes, tokenizer


@pytest.fixture(scope="module")
def tok():
  return tokenizer.load_tokenizer()


def test_shipped_asset_equals_a_fresh_training():
  with open(tokenizer.ASSET_PATH) as f:
    shipped = json.load(f)
  fresh = json.loads(tokenizer.train_shapes_tokenizer().to_str())
  assert shipped["model"]["vocab"] == fresh["model"]["vocab"]
  assert shipped["post_processor"] == fresh["post_processor"]


def test_every_caption_round_trips_without_unknown_words(tok):
  unk = tok.unk_token_id
  for split in ("train", "heldout"):
    for index in range(600):
      _, caption = shapes.sample_scene(split, 0, index)
      ids = tok(caption)["input_ids"]
      assert unk not in ids, caption
      assert ids[-1] == tok.eos_token_id
      decoded = tok.decode(ids, skip_special_tokens=True)
      assert re.sub(r"\s+,", ",", decoded) == caption


def test_the_shapes_context_holds_the_longest_caption_the_templates_make(tok):
  from configs import common
  from t2i_jax.data import captions

  longest_object = max((f"a {size} purple {shape}" for sizes in captions.SIZE_WORDS for size in sizes
                        for shapes_ in captions.SHAPE_WORDS for shape in shapes_), key=lambda t: len(tok(t)["input_ids"]))
  longest = lambda phrases: max((p for group in phrases for p in group), key=lambda t: len(tok(t)["input_ids"]))
  texts = [t.format(obj=longest_object, pos=longest(captions.POSITION_PHRASES)) for t in captions.SINGLE_TEMPLATES]
  texts += [t.format(obj0=longest_object, obj1=longest_object, rel=longest(captions.RELATION_PHRASES))
            for t in captions.PAIR_TEMPLATES]
  lengths = [len(tok(t)["input_ids"]) for t in texts]
  assert max(lengths) == 18 <= common.SHAPES_CONTEXT


def test_tokenize_pads_masks_and_ends_with_eos(tok):
  tokens, mask = tokenizer.tokenize(tok, ["a red circle in the middle", "a big blue box above a tiny red star"], 16)
  assert tokens.shape == (2, 16) and tokens.dtype == np.int32 and mask.dtype == bool
  lengths = mask.sum(axis=1)
  np.testing.assert_array_equal(lengths, [7, 10])
  assert tokens[0, 6] == tok.eos_token_id and tokens[1, 9] == tok.eos_token_id
  assert np.all(tokens[~mask] == tok.pad_token_id)


def test_long_captions_warn_once_then_are_counted_and_empty_ones_raise(tok):
  tokenizer.truncation_report()  # whatever other tests tokenized before
  long = "a small red circle to the left of a large blue square"  # 13 tokens with its end
  with pytest.warns(UserWarning, match="truncated") as said:
    tokens, mask = tokenizer.tokenize(tok, [long], 5)
    for _ in range(3):
      tokenizer.tokenize(tok, [long, "a red star"], 5)
  assert len(said) == 1
  assert mask.all() and tokens.shape == (1, 5)
  assert tokenizer.truncation_report() == ("4 of 7 captions tokenized (57.1%) had more than 5 tokens (up to 13) "
                                           "and lost their end")
  assert tokenizer.truncation_report() is None
  with pytest.raises(ValueError, match="caption 1 is empty"):
    tokenizer.tokenize(tok, ["a red star", "   "], 8)


def test_words_outside_the_vocabulary_are_named_and_a_prompt_of_none_is_refused(tok):
  assert tokenizer.unknown_words(tok, ["a chartreuse dodecahedron", "a red circle"]) == [
      ["chartreuse", "dodecahedron"], []]
  with pytest.warns(UserWarning, match="read as unknown tokens: 'chartreuse', 'dodecahedron'"):
    tokenizer.check_prompts(tok, ["a chartreuse dodecahedron", "a red circle"])
  for prompt in ("chartreuse dodecahedron", "chartreuse-dodecahedron"):  # punctuation is no known word either
    with pytest.raises(ValueError, match="no word of the prompt"):
      tokenizer.check_prompts(tok, [prompt])
