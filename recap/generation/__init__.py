"""Generating clips: variants x seeds grids from identical noise, run folders, style transfer."""
