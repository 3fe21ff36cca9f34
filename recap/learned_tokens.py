"""Learned tokens as files: save, load (safely), list, inspect and share.

A token is a pair ``NAME.safetensors`` = ``{placeholder: tensor[n_vectors, dim]}`` (the layout of
diffusers' ``learned_embeds.safetensors``) and ``NAME.json`` with the model it was trained for,
its settings, loss curve and training-clip hashes. Pickled ``.pt``/``.bin`` files are refused:
unpickling runs arbitrary code, and a shared token file is exactly what strangers send you.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from recap.backends import AudioBackend
from recap.paths import atomic_write_bytes, atomic_write_json, safe_name, sha256_file
from recap.errors import BadInput, ServiceError

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"}


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


def save_token(token: LearnedToken, out_dir: str | Path, name: str | None = None) -> Path:
    """Writes ``NAME.safetensors`` and ``NAME.json`` (atomically); returns the .safetensors path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = safe_name(name or token.placeholder, fallback="token")
    path = out_dir / f"{stem}.safetensors"
    atomic_write_bytes(path, save({token.placeholder: token.vectors.detach().float().cpu().contiguous()},
                                  metadata={"format": "recap.token/1", "model_id": str(token.meta.get("model_id", ""))}))
    meta = {**token.meta, "placeholder": token.placeholder, "saved": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    atomic_write_json(out_dir / f"{stem}.json", meta)
    token.path = path
    return path


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise TokenFileError(
            f"{path.name}: pickled files ({path.suffix}) are refused, because loading a pickle can run any code "
            "it contains. Ask for a .safetensors file, or convert one you trust with "
            "`safetensors.torch.save_file(torch.load(path, weights_only=True), 'token.safetensors')`."
        )
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80" or head == b"PK":  # pickle protocol marker / torch zip archive
        raise TokenFileError(f"{path.name}: this is a pickle/torch archive, not safetensors; refused (it could run code)")


def read_token_file(path: str | Path) -> LearnedToken:
    """Reads a token file without a model (for listings); accepts recap/diffusers and A1111 layouts."""
    path = Path(path)
    if not path.is_file():
        raise TokenFileError(f"{path.name}: no such token file")
    _refuse_pickle(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise TokenFileError(f"{path.name}: not a readable safetensors file ({exc})") from exc
    meta_path = path.with_suffix(".json")
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if "emb_params" in tensors:  # A1111 safetensors embedding: one tensor, the name is the file's
        placeholder, vectors = f"<{safe_name(path.stem)}>", tensors["emb_params"]
    elif any(k.startswith("string_to_param") for k in tensors):
        key = next(k for k in tensors if k.startswith("string_to_param"))
        placeholder, vectors = f"<{safe_name(path.stem)}>", tensors[key]
    elif len(tensors) == 1:
        placeholder, vectors = next(iter(tensors.items()))
    else:
        raise TokenFileError(f"{path.name}: expected one token tensor, found {len(tensors)} ({', '.join(list(tensors)[:5])})")
    if vectors.ndim == 1:
        vectors = vectors[None]
    if vectors.ndim != 2 or not torch.isfinite(vectors).all():
        raise TokenFileError(f"{path.name}: token tensor must be finite [n_vectors, dim], got shape {tuple(vectors.shape)}")
    return LearnedToken(placeholder=meta.get("placeholder", placeholder), vectors=vectors.float(), meta=meta, path=path)


def load_token(backend: AudioBackend, path: str | Path, allow_other_model: bool = False) -> LearnedToken:
    """Loads a token for ``backend``, checking it was made for this text encoder.

    Raises:
        TokenFileError: pickles, unreadable files, a width mismatch, or (unless ``allow_other_model``)
            a token trained for another model.
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
    if token.placeholder in backend.tokenizer.get_vocab():
        raise TokenFileError(f"{name}: placeholder {token.placeholder!r} is already a word of this model's vocabulary")
    return token


def list_tokens(tokens_dir: str | Path) -> list[LearnedToken]:
    """Readable token files in a folder, newest first (unreadable ones are logged and skipped)."""
    tokens_dir = Path(tokens_dir)
    out = []
    for p in sorted(tokens_dir.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            out.append(read_token_file(p))
        except TokenFileError as exc:
            log.warning("skipping %s", exc)
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


def push_token(path: str | Path, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Uploads the token pair (and a short model card) to a Hub model repo; returns its URL.

    Uses ``HF_TOKEN`` (or ``token``). Raises RuntimeError with the Hub's reason on failure.
    """
    from huggingface_hub import HfApi

    path = Path(path)
    tok = read_token_file(path)
    api = HfApi(token=token)
    card = (
        f"---\ntags: [textual-inversion, text-to-audio, recap]\nbase_model: {tok.meta.get('model_id', '')}\n---\n\n"
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
        raise ServiceError(f"could not push {path.name} to {repo_id}: {type(exc).__name__}: {exc}") from exc
    return f"https://huggingface.co/{repo_id}"
