"""Learned tokens as files: save, load (safely), list, inspect and share.

A token is a pair ``NAME.safetensors`` = ``{placeholder: tensor[n_vectors, dim]}`` (the layout of
diffusers' ``learned_embeds.safetensors``) whose metadata names the model, its width and the
training state, and ``NAME.json`` with the settings, loss curve and training-clip hashes. A
token file is exactly what strangers send each other, so loading trusts nothing in it:

- the safetensors header is parsed (8-byte little-endian length, then a bounded JSON header)
  before anything is decoded; a file is never judged by its first byte, and pickled
  ``.pt``/``.bin`` files are refused (unpickling runs arbitrary code);
- the tensor must be floating point, 2-D ``[n_vectors, dim]`` (a 1-D vector counts as one),
  with 1..``LIMITS.vectors`` vectors and every value finite;
- the model and width come from the metadata inside the ``.safetensors`` (a lone file without
  its ``.json`` is checked as well); the placeholder is checked against the model's tokenizer.

One bad file in a shared folder is logged and skipped by :func:`list_tokens`, never fatal.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from recap.backends.base import AudioBackend
from recap.backends.base import MAX_PLACEHOLDER_CHARS, check_placeholder_text
from recap.errors import BadInput, ServiceError
from recap.limits import LIMITS
from recap.paths import atomic_write_bytes, atomic_write_json, safe_name, sha256_file

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"}
FORMAT = "recap.token/1"
# 16 vectors of width 8192 in float64 are 1 MiB; anything much larger is not one token.
MAX_FILE_BYTES = 8 * 2**20
# The JSON header of a token file is a few hundred bytes; a huge one is an attack on the parser.
MAX_HEADER_BYTES = 2**20
MAX_SIDECAR_BYTES = 4 * 2**20
MAX_WIDTH = 8192
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
# Newest token files a listing reads (a folder that grows past this shows the newest).
MAX_LISTED = 500
# Metadata keys kept inside the .safetensors (str -> str), so the file alone says what it is.
_META_KEYS = ("format", "model_id", "model_name", "family", "embedding_dim", "placeholder", "init_word",
              "steps_done", "complete", "pair")


class TokenFileError(BadInput):
    """A token file that cannot or must not be used; the message says why."""


@dataclass
class LearnedToken:
    """A placeholder and its learned vectors.

    Attributes:
        placeholder: The text written in prompts, e.g. ``<my-bell>``.
        vectors: [n_vectors, embedding_dim] float32.
        meta: model_id, family, init, steps, losses, clip hashes, settings, versions.
    """

    placeholder: str
    vectors: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def n_vectors(self) -> int:
        return int(self.vectors.shape[0])

    def as_tokens(self) -> dict[str, torch.Tensor]:
        return {self.placeholder: self.vectors}

    def summary(self) -> dict[str, Any]:
        """What a run manifest records about a token it used."""
        out = {
            "placeholder": self.placeholder,
            "n_vectors": self.n_vectors,
            "model_id": self.meta.get("model_id"),
            "steps": self.meta.get("steps_done"),
            "init_word": self.meta.get("init_word"),
        }
        if self.path is not None:
            out["file"] = str(self.path)
            out["sha256"] = sha256_file(self.path)
        return out


# ----------------------------------------------------------------------------- checks
def check_vectors(name: str, vectors: Any) -> torch.Tensor:
    """``vectors`` as float32 ``[n_vectors, dim]`` (a 1-D vector is one), or :class:`TokenFileError`.

    Refuses non-float tensors, other shapes, 0 or more than ``LIMITS.vectors`` vectors, a width
    above :data:`MAX_WIDTH`, and any NaN or infinite value.
    """
    if not isinstance(vectors, torch.Tensor) or not vectors.is_floating_point():
        raise TokenFileError(f"{name}: the token tensor must hold floating-point numbers")
    if vectors.ndim == 1:
        vectors = vectors[None]
    if vectors.ndim != 2:
        raise TokenFileError(f"{name}: the token tensor must be [n_vectors, width]; it has shape {tuple(vectors.shape)}")
    n, width = vectors.shape
    if not 1 <= n <= LIMITS.vectors:
        raise TokenFileError(f"{name}: a token holds 1 to {LIMITS.vectors} vectors; this one has {n}")
    if not 1 <= width <= MAX_WIDTH:
        raise TokenFileError(f"{name}: vectors of width {width} fit no text encoder here (at most {MAX_WIDTH})")
    vectors = vectors.float()
    if not torch.isfinite(vectors).all():
        raise TokenFileError(f"{name}: the token's vectors contain NaN or infinite values")
    return vectors


def _refuse_pickle_suffix(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise TokenFileError(
            f"{path.name}: pickled files ({path.suffix}) are refused, because loading a pickle can run any code "
            "it contains. Ask for a .safetensors file, or convert one you trust with "
            "`safetensors.torch.save_file(torch.load(path, weights_only=True), 'token.safetensors')`."
        )


def _not_safetensors(name: str, data: bytes, why: str) -> TokenFileError:
    # Said only after the header failed to parse: a real safetensors file may start with any byte.
    if data[:1] == b"\x80" or data[:2] == b"PK":
        return TokenFileError(f"{name}: this looks like a pickle or torch archive, not safetensors; refused "
                              "(loading a pickle can run any code it contains)")
    return TokenFileError(f"{name}: not a safetensors token file ({why}); pickled files are refused")


def _parse_safetensors(name: str, data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Checks the header of a safetensors file in memory, then decodes it: (tensors, metadata)."""
    if len(data) < 10:
        raise _not_safetensors(name, data, f"only {len(data)} bytes")
    size = int.from_bytes(data[:8], "little")
    if not 2 <= size <= MAX_HEADER_BYTES:
        raise _not_safetensors(name, data, f"its header length {size:,} is not between 2 and {MAX_HEADER_BYTES:,}")
    if 8 + size > len(data):
        raise _not_safetensors(name, data, f"the header promises {size:,} bytes, the file is {len(data):,}: truncated")
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _not_safetensors(name, data, "its header is not JSON") from None
    if not isinstance(header, dict):
        raise _not_safetensors(name, data, "its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TokenFileError(f"{name}: its metadata must map text to text")
    for key, entry in header.items():
        if not isinstance(entry, dict) or entry.get("dtype") not in FLOAT_DTYPES:
            dtype = entry.get("dtype") if isinstance(entry, dict) else None
            raise TokenFileError(f"{name}: tensor {key[:40]!r} is {dtype!r}; token vectors are floating point "
                                 f"({', '.join(sorted(FLOAT_DTYPES))})")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        raise TokenFileError(f"{name}: not a readable safetensors file ({type(exc).__name__}: {str(exc)[:120]})") from exc
    return tensors, metadata


def _read_sidecar(path: Path) -> dict[str, Any]:
    """``NAME.json`` beside a token file ({} when there is none), or :class:`TokenFileError`."""
    if not path.is_file():
        return {}
    if path.stat().st_size > MAX_SIDECAR_BYTES:
        raise TokenFileError(f"{path.name}: {path.stat().st_size / 2**20:.1f} MB is too large for a token's settings")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise TokenFileError(f"{path.name}: not valid JSON ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise TokenFileError(f"{path.name}: must hold a JSON object")
    return meta


def _typed_metadata(metadata: dict[str, str]) -> dict[str, Any]:
    """The recap keys of a safetensors' metadata with their types back (ints, a bool)."""
    out: dict[str, Any] = {}
    for key in _META_KEYS:
        value = metadata.get(key)
        if value is None or value == "":
            continue
        if key in ("embedding_dim", "steps_done"):
            out[key] = int(value) if value.isdigit() else None
        elif key == "complete":
            out[key] = value == "true"
        else:
            out[key] = value[:200]
    return {k: v for k, v in out.items() if v is not None}


# ----------------------------------------------------------------------------- files
def save_token(token: LearnedToken, out_dir: str | Path, name: str | None = None) -> Path:
    """Writes ``NAME.json`` then ``NAME.safetensors`` (each atomically); returns the .safetensors path.

    The .safetensors is written last and carries the model, width and training state in its own
    metadata, plus a ``pair`` id the .json repeats: a crash between the two writes leaves a
    .json that no longer matches, which loading then ignores.

    Raises:
        TokenFileError: non-finite or misshapen vectors, a bad placeholder, or a stopped
            (incomplete) token that would replace a finished one of the same name.
    """
    out_dir = Path(out_dir)
    stem = safe_name(name or token.placeholder, fallback="token")
    path = out_dir / f"{stem}.safetensors"
    vectors = check_vectors(path.name, token.vectors.detach().cpu())
    try:
        check_placeholder_text(token.placeholder)
    except BadInput as exc:
        raise TokenFileError(f"{path.name}: {exc}") from None
    if token.meta.get("complete") is False and path.is_file():
        try:
            finished = read_token_file(path).meta.get("complete") is not False
        except TokenFileError:
            finished = False  # an unreadable file holds nothing to keep
        if finished:
            raise TokenFileError(f"{path.name} holds a finished token; a stopped one is not written over it "
                                 "(resume the training, or save it under another name)")
    pair = uuid.uuid4().hex
    meta = {**token.meta, "placeholder": token.placeholder, "embedding_dim": int(vectors.shape[1]), "pair": pair,
            "saved": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    inner = {"format": FORMAT}
    for key in _META_KEYS[1:]:
        value = meta.get(key)
        if value is not None:
            inner[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / f"{stem}.json", meta)
    atomic_write_bytes(path, save({token.placeholder: vectors.contiguous()}, metadata=inner))
    token.path = path
    return path


def read_token_file(path: str | Path) -> LearnedToken:
    """Reads and checks a token file without a model (for listings); recap/diffusers and A1111 layouts.

    Raises:
        TokenFileError: a missing, oversized, pickled, truncated or malformed file; an unusable
            tensor (see :func:`check_vectors`) or placeholder; a .json beside it that is not an
            object of settings.
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise TokenFileError(f"{name}: no such token file")
    _refuse_pickle_suffix(path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise TokenFileError(f"{name}: {size / 2**20:.1f} MB is too large for a token file (at most "
                             f"{MAX_FILE_BYTES // 2**20} MB)")
    tensors, metadata = _parse_safetensors(name, path.read_bytes())
    inner = _typed_metadata(metadata)
    sidecar = _read_sidecar(path.with_suffix(".json"))
    if sidecar and inner.get("pair") and sidecar.get("pair") != inner["pair"]:
        # A crash between the two writes of save_token, or a .json from another file.
        log.warning("%s: ignoring %s, which belongs to another version of the token", name, path.with_suffix(".json").name)
        sidecar = {}
    if "emb_params" in tensors:  # A1111 safetensors embedding: one tensor, the name is the file's
        placeholder, vectors = f"<{safe_name(path.stem, max_len=MAX_PLACEHOLDER_CHARS - 2)}>", tensors["emb_params"]
    elif any(k.startswith("string_to_param") for k in tensors):
        key = next(k for k in tensors if k.startswith("string_to_param"))
        placeholder, vectors = f"<{safe_name(path.stem, max_len=MAX_PLACEHOLDER_CHARS - 2)}>", tensors[key]
    elif len(tensors) == 1:
        placeholder, vectors = next(iter(tensors.items()))
    else:
        shown = ", ".join(repr(k[:40]) for k in list(tensors)[:5])
        raise TokenFileError(f"{name}: expected one token tensor, found {len(tensors)} ({shown})")
    try:
        check_placeholder_text(placeholder)
    except BadInput as exc:
        raise TokenFileError(f"{name}: {exc}") from None
    vectors = check_vectors(name, vectors)
    declared = inner.get("embedding_dim")
    if declared is not None and declared != vectors.shape[1]:
        raise TokenFileError(f"{name}: its metadata says width {declared}, its vectors have width {vectors.shape[1]}")
    # What the .safetensors says about itself wins over the .json beside it.
    meta = {**sidecar, **inner, "placeholder": placeholder}
    return LearnedToken(placeholder=placeholder, vectors=vectors, meta=meta, path=path)


def load_token(backend: AudioBackend, path: str | Path, allow_other_model: bool = False) -> LearnedToken:
    """Loads a token for ``backend``, checking it was made for this text encoder.

    Raises:
        TokenFileError: pickles, unreadable files, a width mismatch, (unless ``allow_other_model``)
            a token trained for another model, or a placeholder this model's tokenizer already
            reads as a word.
    """
    token = read_token_file(path)
    name = Path(path).name
    if token.vectors.shape[1] != backend.embedding_dim:
        raise TokenFileError(
            f"{name}: made for a text encoder of width {token.vectors.shape[1]}; {backend.name} has width "
            f"{backend.embedding_dim}. Train the token for this model."
        )
    trained_for = token.meta.get("model_id")
    if trained_for and trained_for != backend.model_id and not allow_other_model:
        raise TokenFileError(
            f"{name}: trained for {trained_for}, not {backend.model_id}; its vectors mean nothing to this model's "
            "text encoder (load it anyway with allow_other_model=True)."
        )
    try:
        backend.check_placeholder(token.placeholder, token.n_vectors)
    except BadInput as exc:
        raise TokenFileError(f"{name}: {exc}") from None
    return token


def list_tokens(tokens_dir: str | Path, limit: int = MAX_LISTED) -> list[LearnedToken]:
    """Readable token files in a folder, newest first; each bad one is logged and skipped.

    The folder is shared by everyone on a server, so no single file (a junk upload, a
    truncated write, a broken .json) may break the listing for the others.
    """
    found = []
    for p in Path(tokens_dir).glob("*.safetensors"):
        try:
            if p.is_file():
                found.append((p.stat().st_mtime, p))
        except OSError:  # removed while listing
            continue
    out = []
    for _, p in sorted(found, reverse=True)[:limit]:
        try:
            out.append(read_token_file(p))
        except (TokenFileError, OSError) as exc:
            log.warning("skipping token file %s: %s", p.name, exc)
        except Exception:  # a bug, logged with its traceback, but still only this file's
            log.exception("skipping token file %s", p.name)
    return out


@torch.no_grad()
def nearest_words(backend: AudioBackend, vectors: torch.Tensor, k: int = 10) -> list[list[tuple[str, float]]]:
    """For each learned vector, the ``k`` vocabulary entries closest by cosine."""
    table = backend.text_encoder.get_input_embeddings().weight.detach().float().cpu()
    vocab = backend.tokenizer.get_vocab()
    special = set(backend.tokenizer.all_special_ids)
    ids = torch.tensor(sorted(i for i in vocab.values() if i < table.shape[0] and i not in special))
    rows = torch.nn.functional.normalize(table[ids], dim=1)
    inverse = {i: t for t, i in vocab.items()}
    out = []
    for v in torch.nn.functional.normalize(vectors.float().cpu(), dim=1):
        sims, idx = (rows @ v).topk(min(k, len(ids)))
        out.append([(inverse[int(ids[j])].replace("▁", "").replace("Ġ", ""), float(s)) for s, j in zip(sims, idx)])
    return out


# ----------------------------------------------------------------------------- the Hub
def check_repo_id(repo_id: object) -> str:
    """``repo_id`` stripped, when it is a Hub model repository id ``user-or-org/name``; else BadInput."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = repo_id.strip() if isinstance(repo_id, str) else ""
    shown = repr(text) if len(text) <= 60 else repr(text[:57] + "...")
    if text.count("/") != 1 or len(text) > 96 or not text.isascii():
        raise BadInput(f"{shown} is not a Hub repository id; write it as user-or-org/name")
    try:
        validate_repo_id(text)
    except HFValidationError:
        raise BadInput(f"{shown} is not a Hub repository id; write it as user-or-org/name (letters, digits, "
                       "'-', '_', '.'; no '--' or '..')") from None
    return text


def check_hub_token(secret: object) -> str:
    """The caller's own Hub token, stripped, or :class:`BadInput` (the message never echoes it).

    An empty one is refused here rather than passed on: ``huggingface_hub`` would fall back to
    the server's ``HF_TOKEN`` or cached login, writing with the owner's credentials.
    """
    text = secret.strip() if isinstance(secret, str) else ""
    if not text:
        raise BadInput("pushing needs your own Hugging Face token with write access (create one at "
                       "https://huggingface.co/settings/tokens and paste it in the token field); "
                       "this server never pushes with its own credentials")
    if len(text) > 400 or not text.isascii() or not text.isprintable() or any(c.isspace() for c in text):
        raise BadInput("that Hugging Face token is not well formed (tokens are one line of letters, digits, "
                       "'_' and '-')")
    return text


def push_token(path: str | Path, repo_id: str, token: str, private: bool = False) -> str:
    """Uploads the token pair (and a short model card) to a Hub model repo; returns its URL.

    Args:
        path: The token's .safetensors (its .json goes along when present).
        repo_id: ``user-or-org/name``; created when missing.
        token: The Hub token to write with, always given: an empty one is refused, never
            replaced by ``HF_TOKEN`` (a command line that means the owner's login passes
            ``huggingface_hub.get_token()`` itself).
        private: Create the repository as private.

    Raises:
        BadInput: an empty or malformed token, a malformed repository id, a bad token file.
        ServiceError: the Hub refused or could not be reached (the message never holds the token).
    """
    secret = check_hub_token(token)
    repo_id = check_repo_id(repo_id)
    path = Path(path)
    tok = read_token_file(path)
    from huggingface_hub import HfApi

    api = HfApi(token=secret)
    card = (
        f"---\ntags: [textual-inversion, text-to-audio, recap]\nbase_model: {json.dumps(str(tok.meta.get('model_id', '')))}\n---\n\n"
        f"# {tok.placeholder}\n\nA Textual Inversion token for `{tok.meta.get('model_id', '?')}` trained with recap: "
        f"{tok.n_vectors} vector(s), init word `{tok.meta.get('init_word')}`, {tok.meta.get('steps_done')} steps.\n"
        f"Use it by writing `{tok.placeholder}` in a prompt after loading `{path.name}`.\n"
    )
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True, private=private)
        api.upload_file(path_or_fileobj=str(path), path_in_repo=path.name, repo_id=repo_id)
        if path.with_suffix(".json").is_file():
            api.upload_file(path_or_fileobj=str(path.with_suffix(".json")), path_in_repo=path.with_suffix(".json").name, repo_id=repo_id)
        api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=repo_id)
    except Exception as exc:  # network, auth, permissions: one message the user can act on
        reason = f"{type(exc).__name__}: {exc}".replace(secret, "***")[:300]
        raise ServiceError(f"could not push {path.name} to {repo_id}: {reason}") from None
    return f"https://huggingface.co/{repo_id}"
