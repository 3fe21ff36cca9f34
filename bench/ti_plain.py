"""Textual Inversion the diffusers-example way, for comparison with recap's trainer.

The whole (resized) embedding matrix is trainable and every row but the new token's is restored
after each step, as in diffusers' ``examples/textual_inversion/textual_inversion.py``. Same data,
same objective, same random draws as ``recap.tokens.training.train_token``, so with weight
decay 0 both give the same vectors (the tests check this); only the cost differs.
"""

from __future__ import annotations

import copy

import torch

from recap.backends.base import AudioBackend, EncodedPrompts
from recap.tokens.training import TIConfig, initial_vectors


def train_plain(backend: AudioBackend, latents: torch.Tensor, config: TIConfig, seconds: float, steps: int | None = None) -> torch.Tensor:
    """Trains ``config.placeholder`` (one vector) on a private copy of the text encoder; returns the vector [1, dim]."""
    tokenizer = copy.deepcopy(backend.tokenizer)
    tokenizer.add_tokens([config.placeholder])
    token_id = tokenizer.convert_tokens_to_ids(config.placeholder)
    text_encoder = copy.deepcopy(backend.text_encoder)
    # Grow the matrix only if needed: SAO's T5 already has spare rows past its tokenizer (32,100 < 32,128)
    if len(tokenizer) > text_encoder.get_input_embeddings().num_embeddings:
        text_encoder.resize_token_embeddings(len(tokenizer))
    table = text_encoder.get_input_embeddings()
    generator = torch.Generator("cpu").manual_seed(config.seed)
    with torch.no_grad():
        table.weight[token_id] = initial_vectors(backend, config, generator)[0].to(table.weight)
    table.weight.requires_grad_(True)
    original = table.weight.detach().clone()
    keep = torch.ones(table.num_embeddings, dtype=torch.bool, device=original.device)
    keep[token_id] = False
    optimizer = torch.optim.AdamW([table.weight], lr=config.learning_rate, weight_decay=0.0)

    # Run the backend's own loss with this private encoder and tokenizer swapped in.
    private = copy.copy(backend)
    private.text_encoder, private.tokenizer = text_encoder, tokenizer
    private._tokenizers = {}
    for _ in range(steps or config.steps):
        idx = torch.randint(latents.shape[0], (config.batch_size,), generator=generator)
        which = torch.randint(len(config.templates), (config.batch_size,), generator=generator)
        prompts = [config.templates[int(j)].format(config.placeholder) for j in which]
        enc = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
        loss = private.ti_loss(latents[idx], EncodedPrompts(enc.input_ids, enc.attention_mask), generator, seconds=seconds)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # the example's "make sure we don't update any embedding weights besides the new one"
            table.weight[keep] = original[keep]
    return table.weight[token_id].detach().float().cpu()[None]
