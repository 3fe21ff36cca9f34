"""The offline toy world: its synthetic sounds, the model's training recipe, its evaluation."""
