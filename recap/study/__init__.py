"""Listening studies: the study store, items and listening copies, rater-aware statistics."""
