"""Tiny random-weight versions of every model family, built offline from configs.

They run the exact backend code of the real models (same pipeline classes, same loops) at a few
thousand to a few hundred thousand parameters, so every code path after the download is tested
on a CPU in seconds. Their audio is noise-like and means nothing; every place a user sees them
says so. Weights are drawn from a fixed seed, so a tiny model is the same in every process.

The tokenizers are real ``tokenizers`` models trained on a small sound-description corpus and
shipped under ``assets/tokenizers/``; ``python -m recap.backends.tiny`` rebuilds them.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parents[2] / "assets"
TOKENIZERS = ASSETS / "tokenizers"
TINY_SAMPLE_RATE = 16_000
TINY_SEED = 0

# ----------------------------------------------------------------------------- tokenizers
_SOURCES = """rain thunder wind storm river stream waterfall ocean waves sea birds bird crow owl gull dog cat
cow horse sheep frog insects cricket bees car truck train bus motorcycle engine siren horn bell bells clock
door footsteps crowd applause laughter baby glass plate kettle fire crackling fireplace typing keyboard
printer phone alarm beep buzz hum chirp warble hiss clicks whistle drum drums guitar piano violin flute
trumpet saxophone cello organ choir synth bass cymbal snare kick chimes gong harp oud sitar banjo
airplane helicopter jet boat ship motor fan vacuum washing machine blender microwave faucet shower toilet
leaves branches snow hail gravel sand mud wood metal tin roof window street traffic market cafe kitchen
forest jungle desert cave tunnel station harbor farm city park beach mountain""".split()
_ACTIONS = """falling pouring dripping splashing rumbling howling blowing rustling crashing flowing singing
chirping barking meowing mooing neighing croaking buzzing passing honking ringing ticking creaking
clapping laughing crying breaking boiling crackling typing printing beeping humming whistling playing
strumming tapping hitting roaring idling spinning running rolling echoing fading rising""".split()
_MODIFIERS = """loud soft quiet distant close nearby heavy light gentle strong steady constant repeating
continuous short long slow fast high low deep bright dark warm cold old new small large busy calm noisy
muffled reverberant dry wet metallic wooden hollow rhythmic irregular sharp smooth harsh sweet sad happy
jazz rock electronic ambient acoustic recording recorded tape vinyl radio live studio outside inside
background foreground morning night evening""".split()
_TEMPLATES = [
    "a {m} {s}",
    "{s} {a}",
    "the sound of {s} {a} in the {p}",
    "a recording of a {m} {s}",
    "{m} {s} {a} with {s2} in the background",
    "a {s} playing in a {m} {p}",
    "{s} and {s2}, {m} and {m2}",
    "an old tape of {s} {a} at {t}",
]


def corpus() -> list[str]:
    """Deterministic sentences covering the words sound prompts use."""
    lines = []
    cycle = itertools.count()
    for template in _TEMPLATES:
        for i, s in enumerate(_SOURCES):
            k = next(cycle)
            lines.append(
                template.format(
                    s=s, s2=_SOURCES[(i * 7 + 3) % len(_SOURCES)], a=_ACTIONS[k % len(_ACTIONS)],
                    m=_MODIFIERS[k % len(_MODIFIERS)], m2=_MODIFIERS[(k * 5 + 1) % len(_MODIFIERS)],
                    p=_SOURCES[(k * 3 + 11) % len(_SOURCES)], t=["night", "dawn", "noon", "dusk"][k % 4],
                )
            )
    # Every listed word many times over, so the trainers keep whole words as single tokens
    # (Textual Inversion initialises from a word's single token).
    words = _SOURCES + _ACTIONS + _MODIFIERS + ["a", "an", "the", "of", "in", "on", "with", "and", "at", "sound", "clip"]
    punctuation = [". , ; : ! ? - ' \" ( ) / & % + = * # @"]
    return lines + [" ".join(words)] * 50 + [str(n) for n in range(100)] + punctuation


def build_tokenizers(out: Path = TOKENIZERS, vocab_size: int = 1000) -> None:
    """Trains and saves the two tiny tokenizers: T5-like (Metaspace pieces) and RoBERTa/CLAP-like (byte BPE)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    text = corpus()

    # T5-style: SentencePiece-like pieces on Metaspace ("▁word"), </s> appended, pad id 0 like T5.
    # (A BPE model rather than T5's Unigram: on a corpus this small Unigram prunes whole words away.)
    t5 = Tokenizer(models.BPE(unk_token="<unk>"))
    t5.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    t5.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Punctuation(), pre_tokenizers.Metaspace()])
    t5.decoder = decoders.Metaspace()
    t5.train_from_iterator(text, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"]))
    t5.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(
        tokenizer_object=t5, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=64
    ).save_pretrained(out / "tiny-t5")

    # RoBERTa-style (CLAP's text tower): byte-level BPE with <s> ... </s>.
    rb = Tokenizer(models.BPE())
    rb.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    rb.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    rb.train_from_iterator(
        text, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    )
    rb.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    PreTrainedTokenizerFast(
        tokenizer_object=rb, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>", cls_token="<s>", sep_token="</s>", model_max_length=64,
    ).save_pretrained(out / "tiny-roberta")
    build_gemma_tokenizer(out, vocab_size)


def build_gemma_tokenizer(out: Path = TOKENIZERS, vocab_size: int = 1000) -> None:
    """Trains and saves the Gemma-like tokenizer of `tiny-sa3` (T5Gemma's specials and layout).

    Gemma's ids: <pad> 0, <eos> 1, <bos> 2, <unk> 3; <bos> starts every prompt; case is kept (no
    lowercasing, unlike the T5-like one), so the alphabet holds every printable ASCII character and
    a capitalised word is read, not <unk>. Metaspace pieces ("▁word") as Gemma's SentencePiece.
    (Gemma's byte fallback is left out: this tokenizer reads characters outside ASCII as <unk>.)
    """
    import string

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    gemma = Tokenizer(models.BPE(unk_token="<unk>"))
    gemma.normalizer = normalizers.NFKC()
    gemma.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Punctuation(), pre_tokenizers.Metaspace()])
    gemma.decoder = decoders.Metaspace()
    alphabet = sorted(set(string.ascii_letters + string.digits + string.punctuation))
    gemma.train_from_iterator(corpus(), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"], initial_alphabet=alphabet))
    gemma.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    PreTrainedTokenizerFast(
        tokenizer_object=gemma, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
        model_max_length=64,
    ).save_pretrained(out / "tiny-gemma")


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path = TOKENIZERS / name
    if not path.is_dir():
        raise FileNotFoundError(f"tiny tokenizer {path} is missing; rebuild with `python -m recap.backends.tiny`")
    return AutoTokenizer.from_pretrained(str(path))


# ----------------------------------------------------------------------------- models
def tiny_stable_audio_pipeline():
    """A Stable Audio pipeline at 16 kHz stereo, 4.1 s window (256 latent frames x hop 256)."""
    from diffusers import (
        AutoencoderOobleck,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )
    from transformers import T5Config, T5EncoderModel

    from recap.backends.stable_audio import sao_scheduler

    tokenizer = load_tokenizer("tiny-t5")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        vae = AutoencoderOobleck(
            encoder_hidden_size=8, downsampling_ratios=[2, 4, 4, 8], channel_multiples=[1, 2, 2, 2],
            decoder_channels=8, decoder_input_channels=4, audio_channels=2, sampling_rate=TINY_SAMPLE_RATE,
        )
        text_encoder = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
            )
        )
        transformer = StableAudioDiTModel(
            sample_size=256, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
            num_key_value_attention_heads=1, out_channels=4, cross_attention_dim=16, time_proj_dim=16,
            global_states_input_dim=32, cross_attention_input_dim=16,
        )
        projection = StableAudioProjectionModel(text_encoder_dim=16, conditioning_dim=16, min_value=0, max_value=8)
    scheduler = sao_scheduler()  # Stable Audio Open's sampler settings
    return StableAudioPipeline(
        vae=vae, text_encoder=text_encoder, projection_model=projection, tokenizer=tokenizer,
        transformer=transformer, scheduler=scheduler,
    )


def tiny_audioldm_pipeline():
    """An AudioLDM pipeline at 16 kHz mono: 16 mel bins, hop 160 (AudioLDM's), VAE scale 2."""
    from diffusers import AudioLDMPipeline, AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    tokenizer = load_tokenizer("tiny-roberta")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        unet = UNet2DConditionModel(
            block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8, sample_size=64, in_channels=4,
            out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=(8, 16),
            class_embed_type="simple_projection", projection_class_embeddings_input_dim=16,
            class_embeddings_concat=True,
        )
        vae = AutoencoderKL(
            block_out_channels=[8, 16], in_channels=1, out_channels=1, norm_num_groups=8,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4,
        )
        text_encoder = ClapTextModelWithProjection(
            ClapTextConfig(
                bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=16, intermediate_size=32,
                num_attention_heads=2, num_hidden_layers=1, vocab_size=len(tokenizer), projection_dim=16,
                max_position_embeddings=70,
            )
        )
        vocoder = SpeechT5HifiGan(
            SpeechT5HifiGanConfig(
                model_in_dim=16, sampling_rate=TINY_SAMPLE_RATE, upsample_initial_channel=16,
                upsample_rates=[5, 4, 4, 2], upsample_kernel_sizes=[10, 8, 8, 4], resblock_kernel_sizes=[3],
                resblock_dilation_sizes=[[1, 3]], normalize_before=False,
                # the default init (std 0.01) shrinks the signal to ~1e-11 through the upsampling stack
                initializer_range=0.2,
            )
        )
    # AudioLDM's scheduler settings.
    scheduler = DDIMScheduler(
        beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear", num_train_timesteps=1000,
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    return AudioLDMPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler, vocoder=vocoder
    )


def tiny_stable_audio3_pipeline(distilled: bool = True):
    """A Stable Audio 3 pipeline at 16 kHz stereo: T5Gemma text encoder, DiT, SAME autoencoder (hop 256).

    The layout of ``stabilityai/stable-audio-3-medium`` in miniature: the text encoder's width, the
    DiT's conditioning width and the duration embedding's width are one number (the duration
    embedding joins the text tokens in cross-attention), differential attention and memory tokens
    on, the scheduler as diffusers' conversion script writes it (``num_train_timesteps=1``: the DiT
    takes t in [0, 1]).

    Args:
        distilled: The distilled checkpoint's sampler (ping-pong re-noise, no CFG); False the base
            checkpoint's deterministic Euler sampler (CFG meaningful).
    """
    from diffusers import AutoencoderSAME, FlowMatchEulerDiscreteScheduler, StableAudio3DiTModel, StableAudio3Pipeline
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder
    from transformers import T5GemmaConfig, T5GemmaEncoderModel
    from transformers.models.t5gemma.configuration_t5gemma import T5GemmaModuleConfig

    tokenizer = load_tokenizer("tiny-gemma")
    width = 16  # text hidden size = DiT cond_token_dim = global_cond_dim = duration embedding
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        module = T5GemmaModuleConfig(
            vocab_size=len(tokenizer), hidden_size=width, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=tokenizer.model_max_length,
            sliding_window=tokenizer.model_max_length, layer_types=["full_attention"] * 2,
            pad_token_id=0, eos_token_id=1, bos_token_id=2,
        )
        text_encoder = T5GemmaEncoderModel(
            T5GemmaConfig(encoder=module.to_dict(), decoder=module.to_dict(), is_encoder_decoder=False)
        )
        transformer = StableAudio3DiTModel(
            io_channels=8, patch_size=1, embed_dim=32, depth=2, num_heads=4, cond_token_dim=width,
            global_cond_dim=width, local_add_cond_dim=9, timestep_features_dim=16, ff_mult=2, num_memory_tokens=3,
            use_differential_attention=True,
        )
        # patch 16 x stride 16 = hop 256 (SA3's SAME-L: 256 x 16 = 4096 at 44.1 kHz)
        vae = AutoencoderSAME(
            audio_channels=2, patch_size=16, encoder_channels=8, encoder_c_mults=(2,), encoder_strides=(16,),
            encoder_transformer_depths=(1,), latent_dim=8, use_differential_attention=True, dim_heads=8, ff_mult=2,
            sampling_rate=TINY_SAMPLE_RATE,
        )
        duration_embedder = StableAudio3DurationEmbedder(output_dim=width, fourier_dim=16)
    # what diffusers' convert_stable_audio_3_to_diffusers.py saves for each checkpoint
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0, stochastic_sampling=distilled)
    return StableAudio3Pipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, duration_embedder=duration_embedder,
        transformer=transformer, scheduler=scheduler,
    )


if __name__ == "__main__":
    build_tokenizers()
    print(f"wrote {TOKENIZERS}")
