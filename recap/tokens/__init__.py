"""Learned tokens: the token file format, Textual Inversion training, the editability battery."""
