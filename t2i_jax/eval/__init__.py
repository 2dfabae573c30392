"""Evaluation: the learned captioned-shapes oracle, caption/binding metrics and FID."""
