"""The backend protocol shared by every model family, and the text path with learned tokens.

A backend wraps one diffusers pipeline's components. Generation, audio encoding and the
Textual Inversion loss all start from :meth:`AudioBackend.encode_prompts`, which looks up token
embeddings itself so that learned vectors are applied per call: loading a token never changes
the shared tokenizer or embedding matrix, so one visitor's token cannot change what another
visitor's prompt means.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from recap.backends.registry import ModelDefaults
from recap.backends.speed import TextCache, clips_per_batch, free_memory
from recap.errors import BadInput, Cancelled

log = logging.getLogger(__name__)

# placeholder string -> learned vectors [n_vectors, embedding_dim]
TokenVectors = Mapping[str, torch.Tensor]
# Extended tokenizers kept per backend (each a copy of the model's tokenizer, a few MB for T5).
TOKENIZER_CACHE = 16
# Prompt rows whose text-encoder outputs a backend keeps (a few hundred KB each for SAO).
TEXT_CACHE_ROWS = 256
# on_step(step_index, total_steps)
StepCallback = Callable[[int, int], None]
# Longest placeholder accepted (the web form's text box holds as many).
MAX_PLACEHOLDER_CHARS = 40
# Word-start marks of SentencePiece (T5) and byte-level BPE (RoBERTa/CLAP): a piece that is only
# the mark carries no word.
_WORD_MARKS = ("▁", "Ġ")


@dataclass
class EncodedPrompts:
    """Tokenised prompts with the learned vectors they use.

    Attributes:
        input_ids: [B, L] token ids (learned tokens have ids past the base vocabulary).
        attention_mask: [B, L] 1 for real tokens.
        extra_ids: ids of the learned sub-tokens, aligned with ``extra_vectors`` rows.
        extra_vectors: [n_extra, dim] vectors that replace those ids' embeddings (may require grad).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    extra_ids: list[int] = field(default_factory=list)
    extra_vectors: torch.Tensor | None = None

    def select(self, rows: Sequence[int]) -> EncodedPrompts:
        """The given prompt rows (learned vectors shared)."""
        index = torch.as_tensor(list(rows), dtype=torch.long)
        return EncodedPrompts(self.input_ids[index], self.attention_mask[index], self.extra_ids, self.extra_vectors)


@dataclass
class GenerationOutput:
    """One batch of generated clips.

    Attributes:
        audio: [B, C, T] float32 on the CPU, at the backend's sample rate, cut to the requested length.
        initial: [B, ...] the noise the sampler started from (before the scheduler's sigma scaling).
        final: [B, ...] the denoised latents, float32 on the CPU.
    """

    audio: torch.Tensor
    initial: torch.Tensor
    final: torch.Tensor


def expand_placeholder(placeholder: str, n_vectors: int) -> list[str]:
    """The sub-token strings a multi-vector token is written as (diffusers' convention)."""
    return [placeholder] + [f"{placeholder}_{i}" for i in range(1, n_vectors)]


def _shown(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 50 else shown[:47] + "..."


def check_placeholder_text(placeholder: object) -> str:
    """``placeholder`` when it can be written in a prompt as one new word, else :class:`BadInput`.

    The model-independent part of :meth:`AudioBackend.check_placeholder`: text, not empty, at
    most :data:`MAX_PLACEHOLDER_CHARS` characters, no spaces, control or invisible characters (a
    learned token is added to the tokenizer as this exact string, so an empty one would replace
    ``<unk>`` and an invisible one could never be typed or seen).
    """
    if not isinstance(placeholder, str):
        raise BadInput(f"a token's placeholder must be text, got {type(placeholder).__name__}")
    if not placeholder.strip():
        raise BadInput("the token's placeholder is empty; name the new word, e.g. <my-bell>")
    if len(placeholder) > MAX_PLACEHOLDER_CHARS:
        raise BadInput(f"placeholder {_shown(placeholder)} is {len(placeholder)} characters long; "
                       f"at most {MAX_PLACEHOLDER_CHARS} are accepted")
    if any(c.isspace() for c in placeholder):
        raise BadInput(f"placeholder {_shown(placeholder)} contains spaces; write it as one word, e.g. <my-bell>")
    # isprintable() is False for control, format (zero-width), private-use and unassigned characters
    if any(not c.isprintable() or unicodedata.category(c) in ("Co", "Cn") for c in placeholder):
        raise BadInput(f"placeholder {_shown(placeholder)} contains control or invisible characters")
    return placeholder


def seed_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per seed, so noise is the same on any device and in any batch."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


class AudioBackend(ABC):
    """One text-to-audio model behind the interface the rest of recap uses.

    Subclasses implement a model family; an instance holds loaded components read-only.
    """

    family: str = ""
    defaults: ModelDefaults

    def __init__(
        self,
        name: str,
        model_id: str,
        pipe: Any,
        device: torch.device,
        dtype: torch.dtype,
        random_weights: bool = False,
        description: str = "",
    ) -> None:
        self.name = name
        self.model_id = model_id
        self.pipe = pipe
        self.device = device
        self.dtype = dtype
        self.random_weights = random_weights
        self.description = description
        self.tokenizer = pipe.tokenizer
        self.text_encoder = pipe.text_encoder
        self._tokenizers: dict[tuple[tuple[str, int], ...], Any] = {}
        self._tokenizers_lock = threading.Lock()
        self.text_cache = TextCache(TEXT_CACHE_ROWS)

    # ------------------------------------------------------------------ description
    @property
    @abstractmethod
    def sample_rate(self) -> int: ...

    @property
    @abstractmethod
    def channels(self) -> int: ...

    @property
    @abstractmethod
    def max_seconds(self) -> float: ...

    @property
    def embedding_dim(self) -> int:
        return int(self.text_encoder.get_input_embeddings().embedding_dim)

    @property
    def max_prompt_tokens(self) -> int:
        return int(self.tokenizer.model_max_length)

    @property
    def label(self) -> str:
        """How the model is named wherever a user sees it."""
        suffix = " (random weights: audio is not meaningful)" if self.random_weights else ""
        return f"{self.name}{suffix}"

    def describe(self) -> dict[str, Any]:
        """What goes into manifests and the About page."""
        return {
            "name": self.name,
            "model_id": self.model_id,
            "family": self.family,
            "random_weights": self.random_weights,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "max_seconds": self.max_seconds,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
        }

    # ------------------------------------------------------------------ text
    def check_placeholder(self, placeholder: str, n_vectors: int = 1) -> None:
        """Raises :class:`BadInput` unless ``placeholder`` is a new word for this model's tokenizer.

        A learned token is added to a copy of the tokenizer as an exact string, and added tokens
        are matched before the model's own pieces, in every prompt of the call (the baseline
        too). So a placeholder that the tokenizer already reads as one token (``bell`` is T5's
        ``▁bell``, ``the``, ``▁bell`` itself, ``<unk>``) or that is an ordinary word would
        silently take that word over; both are refused. The check asks the tokenizer how it
        splits the text, alone and after a space, as a prompt would hold it.
        """
        check_placeholder_text(placeholder)
        hint = f"e.g. <{re.sub(r'[^0-9A-Za-z-]+', '', placeholder)[:20] or 'my-sound'}-x>"
        tok = self.tokenizer
        vocab = tok.get_vocab()
        specials = set(tok.all_special_tokens)
        for piece in expand_placeholder(placeholder, n_vectors):
            if piece in vocab or piece in specials:
                raise BadInput(f"placeholder piece {_shown(piece)} is already in the vocabulary of {self.name}; "
                               f"choose another, {hint}")
            for text in (piece, " " + piece):
                ids = [i for i in tok(text, add_special_tokens=False).input_ids
                       if tok.convert_ids_to_tokens(i) not in _WORD_MARKS]
                if len(ids) == 1:
                    raise BadInput(f"placeholder {_shown(piece)} is already in the vocabulary of {self.name}: its "
                                   f"tokenizer reads it as the token {_shown(tok.convert_ids_to_tokens(ids[0]))}; "
                                   f"choose another, {hint}")
        if placeholder.replace("'", "").isalnum():
            raise BadInput(f"placeholder {_shown(placeholder)} is an ordinary word: it would take over that word "
                           f"in every prompt (the baseline's too); mark it as new, {hint}")

    def tokenizer_for(self, tokens: TokenVectors | None) -> Any:
        """The tokenizer extended with ``tokens``' placeholders (a cached copy; the shared one is never touched).

        Raises:
            BadInput: a placeholder that would take over an existing word (see :meth:`check_placeholder`).
        """
        if not tokens:
            return self.tokenizer
        key = tuple(sorted((p, int(v.shape[0])) for p, v in tokens.items()))
        with self._tokenizers_lock:
            tok = self._tokenizers.pop(key, None)
            if tok is None:
                # Checked once per token set: every path that brings tokens (UI, CLI, experiments)
                # passes here, whether or not its loader checked.
                for placeholder, n in key:
                    self.check_placeholder(placeholder, n)
                tok = copy.deepcopy(self.tokenizer)
                for placeholder, n in key:
                    tok.add_tokens(expand_placeholder(placeholder, n))
            self._tokenizers[key] = tok  # most recently used last
            while len(self._tokenizers) > TOKENIZER_CACHE:  # a server sees many visitors' token sets
                self._tokenizers.pop(next(iter(self._tokenizers)))
            return tok

    @staticmethod
    def expand_prompt(prompt: str, tokens: TokenVectors | None) -> str:
        """Writes each multi-vector placeholder as its sub-tokens."""
        for placeholder, vectors in (tokens or {}).items():
            n = int(vectors.shape[0])
            if n > 1:
                pattern = re.escape(placeholder) + r"(?!_\d)"
                prompt = re.sub(pattern, " ".join(expand_placeholder(placeholder, n)), prompt)
        return prompt

    def unknown_words(self, prompt: str, tokens: TokenVectors | None = None) -> list[str]:
        """The words of ``prompt`` that the text encoder cannot read, in order, each once.

        A word counts when any piece of it becomes the tokenizer's unknown token: a closed
        vocabulary (the `toy` model's) reads words it was not trained on as ``<unk>``, so two
        prompts that differ only there embed alike. Placeholders of ``tokens`` are readable; one
        that is not loaded is not.
        """
        tok = self.tokenizer_for(tokens)
        unk = getattr(tok, "unk_token_id", None)
        if unk is None or not isinstance(prompt, str):
            return []
        words = self.expand_prompt(prompt, tokens).split()
        # per word rather than per offset: slow tokenizers have no offsets, and a word is what to show
        ids = tok(words, add_special_tokens=False, is_split_into_words=False)["input_ids"] if words else []
        return list(dict.fromkeys(w for w, i in zip(words, ids) if unk in i))

    def count_tokens(self, prompt: str, tokens: TokenVectors | None = None) -> int:
        """Number of text-encoder tokens ``prompt`` takes, special tokens included, before truncation."""
        tok = self.tokenizer_for(tokens)
        return len(tok(self.expand_prompt(prompt, tokens)).input_ids)

    def tokenize(self, prompts: Sequence[str], tokens: TokenVectors | None = None) -> EncodedPrompts:
        """Tokenises to the encoder's fixed length, as the diffusers pipelines do."""
        tok = self.tokenizer_for(tokens)
        texts = [self.expand_prompt(p, tokens) for p in prompts]
        enc = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        extra_ids: list[int] = []
        vectors: list[torch.Tensor] = []
        for placeholder, vec in (tokens or {}).items():
            if vec.ndim != 2 or vec.shape[1] != self.embedding_dim:
                raise ValueError(
                    f"token {placeholder!r} has shape {tuple(vec.shape)}; this model needs [n, {self.embedding_dim}]"
                )
            extra_ids += tok.convert_tokens_to_ids(expand_placeholder(placeholder, int(vec.shape[0])))
            vectors.append(vec)
        return EncodedPrompts(
            input_ids=enc.input_ids,
            attention_mask=enc.attention_mask,
            extra_ids=extra_ids,
            extra_vectors=torch.cat(vectors) if vectors else None,
        )

    def input_embeddings(self, enc: EncodedPrompts) -> torch.Tensor:
        """Token embeddings [B, L, dim] with learned vectors substituted (differentiable in them)."""
        table = self.text_encoder.get_input_embeddings()
        ids = enc.input_ids.to(table.weight.device)
        if not enc.extra_ids:
            return table(ids)
        lookup = torch.full((max(int(ids.max()), max(enc.extra_ids)) + 1,), -1, dtype=torch.long, device=ids.device)
        lookup[torch.tensor(enc.extra_ids, device=ids.device)] = torch.arange(len(enc.extra_ids), device=ids.device)
        row = lookup[ids]
        is_extra = row >= 0
        base = table(torch.where(is_extra, torch.zeros_like(ids), ids))
        vectors = enc.extra_vectors.to(device=base.device, dtype=base.dtype)
        return torch.where(is_extra.unsqueeze(-1), vectors[row.clamp(min=0)], base)

    @abstractmethod
    def text_hidden_states(self, enc: EncodedPrompts) -> torch.Tensor:
        """Last hidden state of the text encoder [B, L, D] for tokenised prompts."""

    def cached_text(self, tag: str, enc: EncodedPrompts, compute: Callable[[EncodedPrompts], torch.Tensor]) -> torch.Tensor:
        """``compute(enc)`` [B, ...], from :attr:`text_cache` per prompt row when no gradient is recorded.

        Training (Textual Inversion, the toy model's text encoder) records gradients and always
        runs the encoder; generation runs under ``no_grad`` and reuses rows it has seen.
        """
        if torch.is_grad_enabled():
            return compute(enc)
        return self.text_cache.rows(tag, enc, lambda rows: compute(enc.select(rows)))

    @torch.no_grad()
    def embed_text(self, prompts: Sequence[str], tokens: TokenVectors | None = None) -> torch.Tensor:
        """Mean-pooled text-encoder embeddings [B, D] (float32, CPU): the text-cosine definition."""
        enc = self.tokenize(prompts, tokens)
        hidden = self.text_hidden_states(enc).float()
        mask = enc.attention_mask.to(hidden.device).unsqueeze(-1).float()
        return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)).cpu()

    # ------------------------------------------------------------------ audio
    @abstractmethod
    def latent_shape(self, seconds: float, full_window: bool = True) -> tuple[int, ...]:
        """Shape of one clip's initial noise (without batch) for ``seconds`` of audio.

        Args:
            full_window: Denoise the model's whole trained window (Stable Audio); False trims it to
                the requested length (a fast preview whose fidelity is not guaranteed).
        """

    def initial_noise(self, seeds: Sequence[int], seconds: float, full_window: bool = True) -> torch.Tensor:
        """[B, ...] standard-normal noise, one draw per seed on a CPU generator (device independent).

        A trimmed window takes the leading frames of the full window's noise, so a preview starts
        where the full-window clip of the same seed starts.
        """
        full = self.latent_shape(seconds, full_window=True)
        noise = torch.stack([torch.randn(full, generator=g) for g in seed_generators(seeds)])
        shape = self.latent_shape(seconds, full_window=full_window)
        return noise[(slice(None),) + tuple(slice(0, n) for n in shape)].contiguous()

    def check_seconds(self, seconds: float) -> float:
        seconds = float(seconds)
        if not (seconds > 0 and seconds <= self.max_seconds + 1e-6):
            raise ValueError(f"seconds must be in (0, {self.max_seconds:.2f}] for {self.name}, got {seconds}")
        return seconds

    def _audio_tensor(self, audio: np.ndarray | torch.Tensor, sr: int) -> torch.Tensor:
        """Converts [C, T] or [B, C, T] audio at ``sr`` to [B, channels, T] at the model's rate."""
        x = torch.as_tensor(np.asarray(audio) if not isinstance(audio, torch.Tensor) else audio).float().cpu()
        if x.ndim == 1:
            x = x[None, None]
        elif x.ndim == 2:
            x = x[None]
        if x.ndim != 3:
            raise ValueError(f"audio must be [C, T] or [B, C, T], got shape {tuple(x.shape)}")
        if sr != self.sample_rate:
            import librosa

            x = torch.from_numpy(librosa.resample(x.numpy(), orig_sr=sr, target_sr=self.sample_rate, axis=-1))
        if x.shape[1] != self.channels:
            # mono -> stereo duplicates, stereo -> mono averages
            x = x.mean(1, keepdim=True).repeat(1, self.channels, 1)
        return x

    @abstractmethod
    def encode_audio(self, audio: np.ndarray | torch.Tensor, sr: int) -> torch.Tensor:
        """VAE latents [B, ...] (float32, CPU) of audio [C, T] or [B, C, T]; deterministic (the mode)."""

    @abstractmethod
    def decode(self, latents: torch.Tensor, seconds: float | None = None) -> torch.Tensor:
        """Audio [B, C, T] float32 on the CPU from latents, cut to ``seconds`` when given."""

    def denoise_bytes_per_clip(self, latent_shape: Sequence[int], guidance: float) -> int:
        """Estimated accelerator memory one clip adds to a denoising call (0: unknown, the batch is capped)."""
        return 0

    def decode_bytes_per_clip(self, latent_shape: Sequence[int]) -> int:
        """Estimated accelerator memory one clip adds to a VAE decode (0: unknown)."""
        return 0

    def decode_input_shape(self, latent_shape: Sequence[int], seconds: float | None) -> tuple[int, ...]:
        """Shape of the latents (without batch) that :meth:`decode` runs its decoder on for ``seconds``
        of audio: all of ``latent_shape`` unless the backend decodes only what it keeps."""
        return tuple(int(n) for n in latent_shape)

    def decode_batched(self, latents: torch.Tensor, seconds: float | None = None) -> torch.Tensor:
        """:meth:`decode` in as few calls as free memory allows (the decoder, not the denoiser, is
        what peaks: Oobleck's last block runs 128 channels at the full sample rate)."""
        n = latents.shape[0]
        per_clip = self.decode_bytes_per_clip(self.decode_input_shape(latents.shape[1:], seconds))
        chunk = clips_per_batch(free_memory(self.device), per_clip, n, n)
        return torch.cat([self.decode(latents[i : i + chunk], seconds) for i in range(0, n, chunk)])

    def content_latents(self, latents: torch.Tensor, seconds: float) -> torch.Tensor:
        """The part of generation-shaped latents [B, ...] that holds the ``seconds`` of audio.

        All of it, unless the model denoises a window longer than the clip (:meth:`latent_shape`);
        comparisons leave the window's padding out, so that the clip, not its padding, is measured.
        """
        return latents

    # ------------------------------------------------------------------ schedule
    def new_scheduler(self) -> Any:
        """A private scheduler per call: its step state must not be shared between concurrent jobs."""
        scheduler = self.pipe.scheduler
        return type(scheduler).from_config(scheduler.config)

    def schedule(self, steps: int) -> Any:
        """A private scheduler set to the sampler's ``steps`` timesteps (on the CPU: only a few numbers)."""
        scheduler = self.new_scheduler()
        scheduler.set_timesteps(steps)
        return scheduler

    @abstractmethod
    def noise_level(self, steps: int, step: int) -> tuple[float, float]:
        """(timestep, sigma) at index ``step`` of the ``steps``-step sampling schedule.

        sigma is the noise-to-signal ratio of the sampler's input there, comparable across families.
        """

    @abstractmethod
    def noise_to(self, latents: torch.Tensor, noise: torch.Tensor, steps: int, step: int) -> torch.Tensor:
        """Clean ``latents`` [B, ...] noised with standard-normal ``noise`` [B, ...] to the level at
        which index ``step`` (0 < step < steps) of the ``steps``-step schedule starts (CPU tensors)."""

    # ------------------------------------------------------------------ generation
    @abstractmethod
    def sample(
        self,
        enc: EncodedPrompts,
        negative: EncodedPrompts | None,
        initial: torch.Tensor,
        seeds: Sequence[int],
        seconds: float,
        steps: int,
        guidance: float,
        on_step: StepCallback | None = None,
        stop: threading.Event | None = None,
        start_step: int = 0,
        start_latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Runs the denoising loop from ``initial`` noise; returns the final latents on the device.

        Args:
            start_step: Index of the first schedule step that runs (style transfer starts late).
            start_latents: What that step starts from (:meth:`noise_to`); None starts from ``initial``.
        """

    @staticmethod
    def denoise_loop(
        scheduler: Any,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        guidance: float,
        step_kwargs: dict[str, Any],
        on_step: StepCallback | None = None,
        stop: threading.Event | None = None,
    ) -> torch.Tensor:
        """The classifier-free-guided sampling loop both diffusers pipelines run.

        Args:
            predict: ``predict(model_input, t)`` -> the network output for the (doubled, with CFG) batch.
            step_kwargs: Extra arguments of ``scheduler.step`` (generators, eta).
        """
        cfg = guidance > 1.0
        for i, t in enumerate(timesteps):
            if stop is not None and stop.is_set():
                raise Cancelled("generation stopped")
            model_input = torch.cat([latents] * 2) if cfg else latents
            pred = predict(scheduler.scale_model_input(model_input, t), t)
            if cfg:
                uncond, cond = pred.chunk(2)
                pred = uncond + guidance * (cond - uncond)
            latents = scheduler.step(pred, t, latents, **step_kwargs).prev_sample
            if on_step is not None:
                on_step(i + 1, len(timesteps))
        return latents

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        seconds: float | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        negative_prompt: str | None = None,
        tokens: TokenVectors | None = None,
        on_step: StepCallback | None = None,
        stop: threading.Event | None = None,
        initial: torch.Tensor | None = None,
        full_window: bool = True,
    ) -> GenerationOutput:
        """Generates one batch: ``prompts[i]`` from the noise of ``seeds[i]``.

        Args:
            prompts: B prompts (may contain learned-token placeholders).
            seeds: B seeds; equal seeds give equal initial noise whatever the prompt.
            seconds: Clip length (default: the model's).
            steps: Denoising steps (default: the model's).
            guidance: Classifier-free guidance scale; <= 1 disables it.
            negative_prompt: Text to steer away from (default: the model's unconditional input).
            tokens: Learned tokens to apply to these prompts only.
            on_step: Called after every denoising step.
            stop: When set, the loop raises :class:`Cancelled` at the next step.
            initial: Explicit starting noise [B, ...] (overrides the seeds' noise).
            full_window: False denoises only the requested length (fast preview; see ``latent_shape``).
        """
        # 1. Check inputs
        if len(prompts) != len(seeds) or not prompts:
            raise ValueError(f"need one seed per prompt, got {len(prompts)} prompts and {len(seeds)} seeds")
        seconds = self.check_seconds(seconds if seconds is not None else self.defaults.seconds)
        steps = int(steps if steps is not None else self.defaults.steps)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        guidance = float(guidance if guidance is not None else self.defaults.guidance)
        negative_prompt = negative_prompt if negative_prompt is not None else self.defaults.negative_prompt
        # 2. Encode text, once per batch
        enc = self.tokenize(prompts, tokens)
        negative = self.tokenize([negative_prompt] * len(prompts), tokens) if negative_prompt else None
        # 3. Noise: one CPU draw per seed
        if initial is None:
            initial = self.initial_noise(seeds, seconds, full_window=full_window)
        # 4. Denoise, 5. decode
        final = self.sample(enc, negative, initial, seeds, seconds, steps, guidance, on_step, stop)
        audio = self.decode_batched(final, seconds)
        return GenerationOutput(audio=audio, initial=initial.float().cpu(), final=final.float().cpu())

    # ------------------------------------------------------------------ training
    @abstractmethod
    def ti_loss(
        self, latents: torch.Tensor, enc: EncodedPrompts, generator: torch.Generator, seconds: float | None = None
    ) -> torch.Tensor:
        """The model's own denoising loss for clean ``latents`` [B, ...] given prompts (scalar, float32).

        Args:
            seconds: Length of the audio the latents hold (Stable Audio conditions on it).
        """

    def training_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Brings encoded training clips to the shape the model denoises at generation time."""
        return latents

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Trades compute for memory in the frozen networks TI backpropagates through."""
        for module in (self.denoiser, self.text_encoder):
            if enabled and hasattr(module, "gradient_checkpointing_enable"):
                module.gradient_checkpointing_enable()
            elif enabled and hasattr(module, "enable_gradient_checkpointing"):
                module.enable_gradient_checkpointing()
            elif not enabled and hasattr(module, "gradient_checkpointing_disable"):
                module.gradient_checkpointing_disable()
            elif not enabled and hasattr(module, "disable_gradient_checkpointing"):
                module.disable_gradient_checkpointing()

    @property
    @abstractmethod
    def denoiser(self) -> torch.nn.Module:
        """The network that predicts noise / velocity (DiT or UNet)."""

    def parameters_snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of every model parameter (for checking that training leaves the model frozen)."""
        out: dict[str, torch.Tensor] = {}
        for prefix, module in self.modules().items():
            for name, p in module.state_dict().items():
                out[f"{prefix}.{name}"] = p.detach().clone()
        return out

    def modules(self) -> dict[str, torch.nn.Module]:
        return {k: v for k, v in self.pipe.components.items() if isinstance(v, torch.nn.Module)}

    def freeze(self) -> None:
        for module in self.modules().values():
            module.requires_grad_(False)
            module.eval()
