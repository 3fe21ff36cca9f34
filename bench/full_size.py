"""Full-size Stable Audio Open 1.0 architecture with random weights, built offline.

Speed and memory do not depend on weight values, so this gives honest timings without the gated
download. Configs follow the published model (DiT 1.06 B, Oobleck VAE, T5-base); the tokenizer is
recap's tiny one set to T5's 128-token length (tokenization cost is negligible).
"""

from __future__ import annotations

import torch


def full_sao_vae():
    """Stable Audio Open 1.0's Oobleck VAE (157 M parameters, 44.1 kHz stereo, hop 2048), random fp32 weights."""
    from diffusers import AutoencoderOobleck

    from recap.backends.loading import quiet_build

    with quiet_build():
        return AutoencoderOobleck(
            encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 8, 8], channel_multiples=[1, 2, 4, 8, 16],
            decoder_channels=128, decoder_input_channels=64, audio_channels=2, sampling_rate=44_100,
        )


def full_sao_pipeline(dtype: torch.dtype = torch.float16):
    from diffusers import (
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )
    from transformers import T5Config, T5EncoderModel

    from recap.backends.loading import cast_pipeline, quiet_build
    from recap.backends.stable_audio import sao_scheduler
    from recap.backends.tiny import load_tokenizer

    tokenizer = load_tokenizer("tiny-t5")
    tokenizer.model_max_length = 128
    with quiet_build():
        transformer = StableAudioDiTModel(
            sample_size=1024, in_channels=64, num_layers=24, attention_head_dim=64, num_attention_heads=24,
            num_key_value_attention_heads=12, out_channels=64, cross_attention_dim=768, time_proj_dim=256,
            global_states_input_dim=1536, cross_attention_input_dim=768,
        )
        vae = full_sao_vae()
        text_encoder = T5EncoderModel(T5Config(
            vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
            relative_attention_num_buckets=32, feed_forward_proj="relu",
        ))
        projection = StableAudioProjectionModel(text_encoder_dim=768, conditioning_dim=768, min_value=0, max_value=512)

    scheduler = sao_scheduler()  # Stable Audio Open's sampler settings
    pipe = StableAudioPipeline(vae=vae, text_encoder=text_encoder, projection_model=projection, tokenizer=tokenizer,
                               transformer=transformer, scheduler=scheduler)
    # as from_pretrained(..., dtype=dtype) would hold it: T5's `wo` stays fp32 under fp16
    return cast_pipeline(pipe, torch.device("cpu"), dtype)


def backend_from_pipe(pipe, name: str, device: torch.device, dtype: torch.dtype):
    from recap.backends.stable_audio import StableAudioBackend

    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    b = StableAudioBackend(name=name, model_id=f"bench/{name}", pipe=pipe, device=device, dtype=dtype, random_weights=True)
    b.freeze()
    return b


def dit_forward_flops(transformer, frames: int, text_tokens: int, batch: int) -> float:
    """Matmul FLOPs of one DiT forward: 2*params*tokens for the linear layers plus attention scores.

    Tokens = latent frames + 1 global token; cross-attention reads text + 2 duration tokens.
    """
    cfg = transformer.config
    linear = sum(m.weight.numel() for m in transformer.transformer_blocks.modules() if isinstance(m, torch.nn.Linear))
    tokens = frames + 1
    inner = cfg.num_attention_heads * cfg.attention_head_dim
    attn = 4 * tokens * tokens * inner + 4 * tokens * (text_tokens + 2) * inner
    # cross-attention K/V projections run over the text tokens, not the latent tokens: close enough
    return batch * (2 * linear * tokens + cfg.num_layers * attn)


def bench_backend(full: bool, model: str, dtype_name: str | None):
    """The backend a benchmark measures: full-size SAO with random weights, or a registered model."""
    from recap.backends.loading import load_backend, pick_device, pick_dtype

    device = pick_device()
    dtype = pick_dtype(device, dtype_name)
    if full:
        return backend_from_pipe(full_sao_pipeline(dtype), "sao-full-random", device, dtype)
    return load_backend(model, device=device, dtype=dtype)
