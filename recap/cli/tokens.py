"""`recap train-token`, `recap tokens`, `recap token-info`, `recap push-token`.

The command line is the owner's: ``push-token`` may write with the machine's own Hub login
(``HF_TOKEN`` or a cached ``hf auth login``), which the web app never does.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from recap.cli.common import add_model_args, open_backend, print_table
from recap.config import settings
from recap.errors import BadInput
from recap.tokens.files import list_tokens, load_token, nearest_words, push_token, read_token_file, save_token
from recap.tokens.checkpoints import default_checkpoint_dir
from recap.tokens.training import TEMPLATES, TIConfig, TIStep, train_token


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-token", help="learn a new pseudo-word from a few clips (Textual Inversion)")
    add_model_args(p)
    p.add_argument("--clips", nargs="+", required=True, help="audio files of the sound (1 or more)")
    p.add_argument("--token", required=True, help="the placeholder, e.g. '<my-bell>'")
    p.add_argument("--init-word", default=None, help="class word to start from (e.g. bell)")
    p.add_argument("--init", choices=["word", "mean", "random"], default=None, help="default: word if --init-word else mean")
    p.add_argument("--vectors", type=int, default=1, help="vectors per token")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=2e-2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seconds", type=float, default=None, help="training length (default: min(longest clip, 10 s))")
    p.add_argument("--template", action="append", default=None, help=f"prompt template with {{}} (repeatable; default {len(TEMPLATES)} built-in)")
    p.add_argument("--mix-snr", type=float, default=None, help="mix clips with noise at this SNR in dB (paper: 20)")
    p.add_argument("--gain-db", type=float, default=0.0, help="random gain +- dB")
    p.add_argument("--init-weight", type=float, default=0.0, help="pull toward the init embedding (0 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of this token")
    p.add_argument("--out", default=None, help="folder for the token files (default: $RECAP_HOME/tokens)")
    p.set_defaults(func=run_train)

    ls = sub.add_parser("tokens", help="list saved tokens")
    ls.add_argument("--dir", default=None, help="folder (default: $RECAP_HOME/tokens)")
    ls.set_defaults(func=run_list)

    info = sub.add_parser("token-info", help="a token's settings and the vocabulary words nearest to it")
    add_model_args(info)
    info.add_argument("path")
    info.add_argument("-k", type=int, default=8)
    info.set_defaults(func=run_info)

    push = sub.add_parser("push-token", help="upload a token pair to a Hugging Face Hub repo (uses HF_TOKEN or your login)")
    push.add_argument("path")
    push.add_argument("--repo", required=True, help="e.g. your-name/my-bell-token")
    push.add_argument("--private", action="store_true")
    push.set_defaults(func=run_push)


def run_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    backend = open_backend(args)
    config = TIConfig(
        placeholder=args.token, init=args.init or ("word" if args.init_word else "mean"), init_word=args.init_word,
        n_vectors=args.vectors, steps=args.steps, learning_rate=args.lr, batch_size=args.batch_size,
        seconds=args.seconds, templates=args.template or list(TEMPLATES), mix_snr_db=args.mix_snr,
        gain_db=args.gain_db, seed=args.seed, checkpoint_every=args.checkpoint_every, init_weight=args.init_weight,
    )
    stop = threading.Event()
    bar = tqdm(total=config.steps, desc=f"training {config.placeholder}", unit="step")

    def on_step(s: TIStep) -> None:
        bar.n = s.step
        bar.set_postfix(loss=f"{s.loss:.4f}", norm=f"{s.norm:.3f}", cos_init=f"{s.cos_to_init:.3f}", refresh=False)
        bar.refresh()

    # Ctrl-C (or SIGTERM) asks the loop to stop after the current step; it checkpoints and returns.
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        token = train_token(backend, args.clips, config, on_step=on_step, stop=stop, resume=args.resume)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        bar.close()
    for note in token.meta.get("notes", []):  # also logged when the clips were read
        print(f"note: {note}")
    folder = Path(args.out) if args.out else settings().tokens_dir
    if token.meta["complete"]:
        print(f"token {token.placeholder} (complete) -> {save_token(token, folder)}")
    else:
        # The token file is written only when training completes, so a stopped retrain never
        # replaces a finished token of the same name; the progress is in the checkpoint.
        print(f"token {token.placeholder} stopped at step {token.meta['steps_done']} of {config.steps}; nothing "
              f"in {folder} was written or replaced. Resume with --resume "
              f"(checkpoint in {default_checkpoint_dir(config.placeholder)})")
    losses = token.meta["losses"]
    if losses:
        k = max(1, min(10, len(losses) // 2))
        print(f"loss: first {k} steps {sum(losses[:k]) / k:.4f}, last {k} steps {sum(losses[-k:]) / k:.4f}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    folder = Path(args.dir) if args.dir else settings().tokens_dir
    rows = [[t.placeholder, t.n_vectors, t.meta.get("model_id", "?"), t.meta.get("steps_done", "?"),
             t.meta.get("init_word") or t.meta.get("init", ""), t.path.name if t.path else ""] for t in list_tokens(folder)]
    if not rows:
        print(f"no tokens in {folder}")
        return 0
    print_table(["token", "vectors", "model", "steps", "init", "file"], rows)
    return 0


def run_info(args: argparse.Namespace) -> int:
    meta_only = read_token_file(args.path)
    if args.model is None and meta_only.meta.get("model_name"):
        args.model = meta_only.meta["model_name"]
    backend = open_backend(args)
    token = load_token(backend, args.path)
    print(f"{token.placeholder}: {token.n_vectors} vector(s) x {token.vectors.shape[1]} for {token.meta.get('model_id')}")
    for key in ("init", "init_word", "steps_done", "train_seconds", "clip_names"):
        if key in token.meta:
            print(f"  {key}: {token.meta[key]}")
    for i, words in enumerate(nearest_words(backend, token.vectors, args.k)):
        print(f"  vector {i} nearest: " + ", ".join(f"{w} ({s:.2f})" for w, s in words))
    return 0


def run_push(args: argparse.Namespace) -> int:
    from huggingface_hub import get_token

    secret = get_token()  # HF_TOKEN, else the cached login: the owner's own credentials
    if not secret:
        raise BadInput("push-token needs a Hugging Face token with write access: set HF_TOKEN or run `hf auth login`")
    print(push_token(args.path, args.repo, token=secret, private=args.private))
    return 0
