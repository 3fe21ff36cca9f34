"""Scoring runs: the analysis of a run folder, spectrograms, style-transfer curves."""
