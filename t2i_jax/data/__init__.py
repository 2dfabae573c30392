"""Data: the captioned-shapes renderer, dataset builders, input pipelines and tokenizers."""
