"""Small helpers the tabs share: errors as sentences, seeds and models from the page, tables, banners."""

from __future__ import annotations

import functools
import html
import inspect
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from recap.errors import BadInput, Cancelled, RecapError
from recap.backends.registry import get_spec, offline_fallback
from recap.limits import text as bounded_text
from recap.ui.context import HF_HELP

log = logging.getLogger(__name__)

MAX_SEEDS = 16
# recap.generation.grid.MAX_PROMPT_CHARS, repeated here because importing recap.generation.grid loads the
# model libraries (seconds) and the page must be built without them.
PROMPT_LIMIT = 1000
MAX_SEEDS_TEXT = 200
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def md_text(text: object) -> str:
    """Any user-supplied text, shown literally in Markdown (no tags, links or formatting)."""
    return html.escape(_MD_SPECIAL.sub(r"\\\1", str(text)), quote=True)


def code_text(text: object) -> str:
    """Any text as a Markdown code span (shown literally; backticks and line breaks removed)."""
    return "`" + re.sub(r"[`\r\n]+", " ", str(text)).strip() + "`"


def _user_message(exc: BaseException) -> str | None:
    """The sentence to show for an expected failure, or None for a bug."""
    if isinstance(exc, (RecapError, ValueError)):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        # The file's name only: the server's folders are none of a visitor's business.
        return f"{Path(str(exc.filename or 'a file')).name} was not found."
    if "out of memory" in str(exc).lower():
        return "The accelerator ran out of memory: try fewer variants or seeds, shorter clips, or fewer steps."
    return None


def is_stopped(exc: BaseException) -> bool:
    """Whether ``exc`` is a job the user stopped."""
    return isinstance(exc, Cancelled)


def warn_if_stopped(exc: BaseException) -> bool:
    """Tells the user a stopped job saved nothing and returns True; False for any other error."""
    if is_stopped(exc):
        gr.Warning("Stopped: nothing was saved.")
        return True
    return False


def _raise_for(exc: BaseException) -> None:
    if is_stopped(exc):
        raise gr.Error("Stopped.", title="Stopped") from exc
    message = _user_message(exc)
    if message is None:
        log.exception("unexpected error in a handler")
        raise gr.Error(f"Something went wrong ({type(exc).__name__}). The server log has the details.") from exc
    raise gr.Error(html.escape(message, quote=False)) from exc  # shown as HTML in the page


def user_errors(fn: Callable) -> Callable:
    """Turns expected failures into ``gr.Error`` with a human sentence (escaped: it may echo input).

    Unexpected exceptions are logged with their traceback and shown as a short apology, so a
    bug never dumps internals (or anything secret) into the page. Works on generator functions.
    """
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                _raise_for(exc)

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            _raise_for(exc)

    return wrapper


def bind(fn: Callable, *args: Any) -> Callable:
    """``fn`` with its first arguments fixed (the app's context, a GPU-gated function): the event
    handler a tab wires. It keeps ``fn``'s name, which names the event's endpoint when no
    ``api_name`` is given, and ``fn``'s remaining parameters, which Gradio reads."""
    bound = functools.partial(fn, *args)
    bound.__name__ = fn.__name__  # type: ignore[attr-defined]
    bound.__doc__ = fn.__doc__
    return bound


def parse_seeds(text: str | Sequence[int] | None) -> list[int]:
    """Seeds from "0, 1, 2", "0 1 2" or a range "0-3" (inclusive).

    Raises:
        ValueError: no seeds, something that is not a whole number, repeats, or too many.
    """
    if isinstance(text, (list, tuple)):
        parts = [str(s) for s in text]
    else:
        parts = [p for p in re.split(r"[,\s;]+", str(text or "").strip()) if p]
    seeds: list[int] = []
    for part in parts:
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo or hi - lo >= MAX_SEEDS:
                raise ValueError(f"seed range {part!r} must go up and hold at most {MAX_SEEDS} seeds")
            seeds += range(lo, hi + 1)
        elif re.fullmatch(r"\d+", part):
            seeds.append(int(part))
        else:
            raise ValueError(f"seed {part!r} is not a whole number >= 0 (write e.g. 0, 1, 2 or 0-3)")
    if not seeds:
        raise ValueError("give at least one seed, e.g. 0, 1, 2")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat: {seeds}")
    if len(seeds) > MAX_SEEDS:
        raise ValueError(f"{len(seeds)} seeds is too many for one grid here; the limit is {MAX_SEEDS}")
    return seeds


def seeds_of(value: Any) -> list[int]:
    """Seeds from the raw seeds field ("0, 1, 2" or "0-3"), each in 0..2^32-1, at most ``LIMITS.seeds``."""
    from recap.generation.grid import check_seeds

    if value is not None and not isinstance(value, str):
        raise BadInput(f"seeds must be text such as 0, 1, 2 or 0-3, got {type(value).__name__}")
    return check_seeds(parse_seeds(bounded_text("seeds", value, MAX_SEEDS_TEXT)))


def model_name(name: Any, choices: list[str]) -> str:
    """``name`` when it is one of the picker's models; :class:`BadInput` naming it otherwise."""
    if not isinstance(name, str) or name not in choices:
        raise BadInput(f"model {str(name)[:60]!r} is not one of this server's models ({', '.join(choices)})")
    return name


def table_rows(value: Any) -> list[list[Any]]:
    """Rows of a ``gr.Dataframe`` value, whatever form it arrives in (array, dict, pandas)."""
    if value is None:
        return []
    if isinstance(value, dict):
        value = value.get("data", [])
    if hasattr(value, "values") and hasattr(value, "columns"):
        value = value.values.tolist()
    rows = [list(r) for r in value]
    # An empty table arrives as one row of blanks.
    return [r for r in rows if any(str(c).strip() for c in r if c is not None)]


def model_banner(name: str, note: str | None = None) -> str:
    """The warning shown above the tabs: random weights, and why the real model is not used."""
    info = get_spec(name)
    parts = []
    if note:
        parts.append(f"⚠️ {note}")
    if info.random_weights:
        parts.append(
            f"⚠️ **`{info.name}` has random weights: the audio it makes is noise and means nothing.** "
            "It is here so every part of the workbench can be tried offline."
            + ("" if note else f" {HF_HELP}")
        )
    elif info.caveat:
        parts.append(f"ℹ️ {info.caveat}" + ("" if note else f" {HF_HELP}"))
    return "\n\n".join(parts)



def form_check(check: Callable[..., Any]) -> Callable[..., str]:
    """The first step of a form's button: ``check`` the raw values and return "" when they are fine,
    or the sentence naming the bad field, for a message shown next to the button (and as a warning
    toast). The results on screen are left as they are: no error covers them. The handler itself
    checks again, for calls that come past the page (the API)."""

    @functools.wraps(check)
    def run(*args: Any) -> str:
        try:
            check(*args)
        except (RecapError, ValueError) as exc:
            message = html.escape(str(exc), quote=False)
            gr.Warning(message)
            return f"⚠️ {md_text(exc)}"
        return ""

    return run


def halt_if_message(message: str | None) -> None:
    """The second step: stops the button's chain (silently: the message is already shown) when the
    check found a bad field, so the job itself never starts."""
    if message:
        raise gr.Error(str(message)[:200], visible=False, print_exception=False)


def follow_fallback(ctx: Any, name: Any) -> tuple[Any, Any]:
    """After a run: when model ``name`` could not load and its stand-in ran instead, the picker
    switches to the stand-in, and the note saying why goes to the banner (see :mod:`recap.ui.app`).

    Returns:
        (update of the picker, the switch for the banner: {"to": stand-in, "note": why} or skip).
    """
    note = ctx.failures().get(name) if isinstance(name, str) else None
    if not note:
        return gr.skip(), gr.skip()
    stand_in = offline_fallback(name)
    return gr.update(value=stand_in), {"to": stand_in, "note": note}
