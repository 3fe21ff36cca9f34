"""The "Prompt" tab: a baseline, its rewordings (LLM, synonyms or multi-turn), edited by hand.

The table of variants lives in the browser (the Dataframe's value): each visitor has their own.
Pure handlers first (rows in, rows out), Blocks wiring after. An API key typed here is used for
the call only: no handler returns it, logs it or stores it. Which key may go to which endpoint,
and whether a visitor may type an endpoint at all, is decided in the core
(:func:`recap.rewording.base.llm_endpoint`, with ``visitor=True``); every other value from the page is
bounded here, with a sentence that names it.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from recap.backends.registry import find_spec
from recap.errors import BadInput
from recap.limits import LIMITS, text, whole
from recap.rewording.llm import MAX_URL_CHARS
from recap.paths import safe_name
from recap.rewording.base import (
    FLAG_TOO_LONG,
    FLAG_UNREADABLE,
    MAX_MODEL_CHARS,
    MAX_N,
    MAX_SEED,
    PART_NAMES,
    PromptParts,
    RecaptionConfig,
    RecaptionResult,
    default_system_prompt,
    edited_by_hand,
    model_flags,
    merge_records,
    recorded_texts,
)
from recap.rewording.checks import word_edit_distance
from recap.rewording.multiturn import (
    EXTRACT_SYSTEM_PROMPT,
    default_fuse_prompt,
    extract_parts,
    fuse_offline,
    fuse_parts,
)
from recap.rewording.recaption import recaption
from recap.variants import METHODS, TIER_HELP, TIER_MANUAL, TIER_TOKEN
from recap.ui.common import PROMPT_LIMIT, code_text, md_text, table_rows, user_errors
from recap.ui.context import AppContext
from recap.ui.jobs import SessionJobs, close_session, stop_request
from recap.ui.session_tokens import usable_tokens

if TYPE_CHECKING:
    from recap.config import Settings

HEADERS = ("label", "method", "tier", "prompt", "text cosine", "word edits", "flags")
METHOD_CHOICES = (("Synonyms (offline, no API key)", "synonym"), ("LLM", "llm"),
                  ("Multi-turn LLM (extract parts, edit, fuse)", "multi-turn"))
MULTI_TURN_OFFLINE = ("Multi-turn, offline (type the parts, fuse with synonyms)", "multi-turn")
DISTANCE_CHOICES = (("light (tier 1)", "light"), ("strong (tier 2)", "strong"), ("custom (LLM only)", "custom"))
_PLACEHOLDER = "{instruction}"
MAX_KEY_CHARS = 500
ENDPOINTS_OFF = ("Off on this server: its own endpoint is used. The owner can allow typed endpoints with "
                 "RECAP_VISITOR_ENDPOINTS=1.")


# ----------------------------------------------------------------------------- rows
def default_system_text(method: str, distance: str) -> str:
    """The system prompt shown for a method and distance ("{instruction}" marks the custom text)."""
    if method == "multi-turn":
        return default_fuse_prompt(distance, _PLACEHOLDER)
    if method == "llm":
        return default_system_prompt(distance, _PLACEHOLDER)
    return ""


def _system_for_call(text: str, method: str, distance: str, instruction: str) -> str | None:
    """None when the shown prompt is the default (the core then writes it), else the edited text."""
    text = (text or "").strip()
    if not text or text == default_system_text(method, distance).strip():
        return None
    return text.replace(_PLACEHOLDER, (instruction or "").strip())


def result_rows(result: RecaptionResult) -> list[list[Any]]:
    """Table rows of a recaption result: the baseline first, then each kept rewording."""
    rows = [["baseline", "baseline", 0, result.baseline, 1.0, 0, ""]]
    for label, v in zip(result.labels()[1:], result.variants):
        cos = None if v.text_cosine is None else round(v.text_cosine, 4)
        rows.append([label, v.method, v.tier, v.text, cos, v.word_edits, "; ".join(v.flags)])
    return rows


def _norm_row(row: list[Any]) -> list[Any]:
    row = list(row) + [""] * (len(HEADERS) - len(row))
    return row[: len(HEADERS)]


def check_rows(rows: list[list[Any]]) -> list[list[Any]]:
    """Validates an edited table; returns it normalised (labels file-safe, tiers whole numbers).

    Raises:
        ValueError: naming the row with an empty or over-long prompt, a bad label or tier,
            a repeated label, or no baseline row.
    """
    from recap.generation.grid import MAX_PROMPT_CHARS

    out, seen = [], set()
    for i, row in enumerate(table_rows(rows), 1):
        label, method, tier, prompt, *rest = _norm_row(row)
        label, prompt = str(label or "").strip(), str(prompt or "").strip()
        if not prompt:
            raise ValueError(f"row {i} ({label or 'no label'}) has an empty prompt")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"row {i} ({label}): the prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
        if not label or safe_name(label) != label:
            raise ValueError(f"row {i}: label {label!r} must be letters, digits, '.', '_' or '-', e.g. {safe_name(label)!r}")
        if label in seen:
            raise ValueError(f"row {i}: label {label!r} is used twice")
        seen.add(label)
        method = str(method or "manual").strip()
        if method not in METHODS:
            raise ValueError(f"row {i} ({label}): method {method!r} is not one of {', '.join(METHODS)}")
        try:
            tier = int(float(tier if tier not in (None, "") else TIER_MANUAL))
        except (TypeError, ValueError):
            raise ValueError(f"row {i} ({label}): tier {tier!r} is not a whole number ({TIER_HELP})") from None
        out.append([label, method, tier, prompt, *rest])
    if out and "baseline" not in seen:
        raise ValueError("the table has no row labelled 'baseline'; every comparison is made against it")
    return out


def set_baseline(rows: Any, prompt: str) -> list[list[Any]]:
    """The table with its baseline row set to ``prompt`` (added first when missing)."""
    prompt = (prompt or "").strip()
    current = [_norm_row(r) for r in table_rows(rows)]
    if not prompt:
        return current
    for row in current:
        if row[0] == "baseline":
            if row[3] != prompt:
                row[3:7] = [prompt, 1.0, 0, ""]
            return current
    return [["baseline", "baseline", 0, prompt, 1.0, 0, ""], *current]


def add_variant(rows: Any, text: str, placeholders: list[str] | tuple[str, ...] = (),
                baseline: str = "") -> list[list[Any]]:
    """Appends a prompt written by hand; it counts as a token prompt when it uses a loaded token.

    ``baseline`` (the baseline box) is set first, so adding right after typing it cannot race it.
    """
    text = (text or "").strip()
    if not text:
        raise ValueError("type the prompt to add first")
    current = set_baseline(rows, baseline)
    if not current:
        raise ValueError("type a baseline prompt first: every variant is compared with it")
    uses_token = any(p in text for p in placeholders)
    stem = "token" if uses_token else "manual"
    taken = {r[0] for r in current}
    k = 1 + sum(1 for t in taken if t.startswith(f"{stem}-"))
    while f"{stem}-{k}" in taken:
        k += 1
    method, tier = ("token", TIER_TOKEN) if uses_token else ("manual", TIER_MANUAL)
    return [*current, [f"{stem}-{k}", method, tier, text, None, None, ""]]


def remove_variant(rows: Any, label: str) -> list[list[Any]]:
    label = (label or "").strip()
    if label == "baseline":
        raise ValueError("the baseline cannot be removed: every comparison is made against it")
    current = [_norm_row(r) for r in table_rows(rows)]
    if label not in {r[0] for r in current}:
        raise ValueError(f"there is no variant labelled {label!r}")
    return [r for r in current if r[0] != label]


def mark_edited_rows(rows: Any, record: dict | None) -> list[list[Any]]:
    """The table with each rewording edited by hand after ``record`` made it turned into a
    hand-written row (method "manual", tier 4), so that its provenance stays true."""
    made = recorded_texts(record)
    return [[r[0], "manual", TIER_MANUAL, *r[3:]] if edited_by_hand(r[0], r[1], r[3], made) else r
            for r in (_norm_row(x) for x in table_rows(rows))]


def score_rows(backend: Any, rows: list[list[Any]], tokens: dict[str, Any] | None = None) -> list[list[Any]]:
    """Text cosine of every prompt to the baseline (one batch), its word edits to the baseline, and
    the flags of what the model will not read (over its token limit, words it reads as <unk>)."""
    from recap.metrics.similarity import text_cosine_matrix

    rows = check_rows(rows)
    if not rows:
        return rows
    base = next(r for r in rows if r[0] == "baseline")
    ordered = [base] + [r for r in rows if r is not base]
    matrix = text_cosine_matrix(backend.embed_text([r[3] for r in ordered], tokens or None))
    cos = {r[0]: float(matrix[0, i]) for i, r in enumerate(ordered)}
    for r in rows:
        r[4] = round(cos[r[0]], 4)
        r[5] = word_edit_distance(base[3], r[3])
        flags = [f for f in str(r[6] or "").split("; ") if f and not f.startswith((FLAG_TOO_LONG, FLAG_UNREADABLE))]
        r[6] = "; ".join(flags + model_flags(backend, r[3], tokens or None))
    return rows


def _text(name: str, value: Any, max_chars: int = LIMITS.text_chars, *, one_line: bool = False) -> str:
    """A text field's value, bounded and stripped (:class:`BadInput` naming the field)."""
    return text(name, value, max_chars, allow_newlines=not one_line).strip()


def _api_key(value: Any) -> str | None:
    """The key typed for this call, or None (the server's key, for the server's endpoint only)."""
    key = _text("API key", value, MAX_KEY_CHARS, one_line=True)
    if key and (not key.isascii() or any(c.isspace() for c in key)):
        raise BadInput("API key must be one word of plain (ASCII) characters")
    return key or None


def _bounded_rows(rows: Any) -> list[list[Any]]:
    """The table's rows, refused when there are too many or a cell is over-long."""
    try:
        current = table_rows(rows)
    except (TypeError, ValueError):
        raise BadInput("the variants table is not a table of rows") from None
    if len(current) > LIMITS.variants:
        raise BadInput(f"the variants table has {len(current)} rows; at most {LIMITS.variants} are accepted")
    for i, row in enumerate(current, 1):
        if len(row) > len(HEADERS) or any(len(str(c)) > LIMITS.text_chars for c in row):
            raise BadInput(f"row {i} of the variants table has too many or too long cells")
    return current


def _config(method: str, distance: str, instruction: str, n: float, seed: float, system: str, extract: str,
            base_url: str, llm_model: str) -> RecaptionConfig:
    """The page's values as a config; each one bounded (the config checks the rest)."""
    for name, value, choices in (("Rewording", method, METHOD_CHOICES), ("Distance", distance, DISTANCE_CHOICES)):
        if value not in {v for _, v in choices}:
            raise BadInput(f"{name} must be one of {', '.join(v for _, v in choices)}; got {str(value)[:40]!r}")
    instruction = _text("Custom instruction", instruction)
    extract = _text("Multi-turn stage 1 system prompt", extract)
    return RecaptionConfig(
        n=whole("How many rewordings", n, 1, MAX_N), distance=distance, custom_instruction=instruction or None,
        system_prompt=_system_for_call(_text("System prompt", system), method, distance, instruction),
        extract_prompt=extract if extract not in ("", EXTRACT_SYSTEM_PROMPT) else None,
        method=method, model=_text("Model", llm_model, MAX_MODEL_CHARS, one_line=True) or None,
        base_url=_text("Endpoint", base_url, MAX_URL_CHARS, one_line=True) or None,
        seed=whole("Seed", 0 if seed in (None, "") else seed, 0, MAX_SEED),
    )


def example_prompt(model_name: Any) -> str:
    """A prompt the model follows, for the baseline box (a closed-vocabulary model reads only its own words)."""
    spec = find_spec(model_name)
    return spec.examples[0] if spec is not None and spec.examples else "rain on a tin roof"


def baseline_hint(model_name: Any, current: Any = None) -> Any:
    """The baseline box for the model now chosen: its example as the placeholder, and as the value
    unless the visitor wrote their own (a value that is some model's example is replaced), so the
    default submit of every tab runs on a prompt the model follows."""
    from recap.backends.registry import list_specs

    examples = {e for s in list_specs() for e in s.examples}
    untouched = not isinstance(current, str) or not current.strip() or current.strip() in examples
    example = example_prompt(model_name)
    return gr.update(placeholder=example, value=example) if untouched else gr.update(placeholder=example)


def method_choices(settings: Settings) -> tuple[list[tuple[str, str]], str | None]:
    """The rewording methods this server can run for a visitor, and why the others are off.

    The LLM methods need an endpoint: the server's (``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``) or
    one the visitor types, which the owner may turn off. With neither, choosing them could only
    fail, so only the offline synonyms are offered, and the reason is shown on the field.
    """
    if settings.llm_configured or settings.visitor_endpoints:
        return list(METHOD_CHOICES), None
    return ([c for c in METHOD_CHOICES if c[1] == "synonym"] + [MULTI_TURN_OFFLINE],
            "The LLM is off here: this server has no LLM endpoint (its owner sets OPENAI_BASE_URL and "
            "OPENAI_API_KEY) and typed endpoints are off (RECAP_VISITOR_ENDPOINTS=1 allows them). Multi-turn "
            "works with parts you type, fused offline.")


def example_samples(model_name: Any) -> list[list[str]]:
    """The chosen model's example prompts as clickable samples (one text each)."""
    spec = find_spec(model_name)
    return [[e] for e in (spec.examples if spec is not None else ())]


def vocabulary_text(vocabulary: Any) -> str:
    """The words a closed-vocabulary model reads, for the Prompt tab ("" for an open one)."""
    if vocabulary is None:
        return ""
    tok = vocabulary.tokenizer_for(None)
    specials = set(getattr(tok, "all_special_tokens", []) or [])
    words = sorted(w for w in tok.get_vocab() if w not in specials and w.isalpha())
    return (f"**The {len(words)} words this model reads** (any other word is `<unk>` to it, so a rewording that "
            "uses one changes nothing it hears; reading a word does not mean it was trained to follow it: see its "
            "model card): " + ", ".join(f"`{w}`" for w in words))


def closed_vocabulary(ctx: AppContext, model_name: Any) -> Any:
    """The loaded model when it reads only a fixed list of words (so that synonyms keep to them), else None."""
    spec = find_spec(model_name)
    if spec is None or not spec.closed_vocabulary:
        return None
    return ctx.backend(spec.name)[0]


def _merge_rows(old: Any, new: list[list[Any]]) -> list[list[Any]]:
    """New rewordings replace the old ones of their own tier only, so light and strong rewordings
    of one baseline stand side by side (the thesis's batches 1 and 2 in one grid); prompts written
    by hand or with tokens stay. Rewordings are listed by tier, hand-written prompts last."""
    new_tiers = {r[2] for r in new if r[0] != "baseline"}
    taken = {r[0] for r in new}
    old_rows = [_norm_row(r) for r in _bounded_rows(old)]
    same_baseline = any(r[0] == "baseline" and r[3] == new[0][3] for r in old_rows) if new else False
    earlier = [r for r in old_rows if same_baseline and r[0] not in taken and str(r[1]) not in ("manual", "token")
               and r[0] != "baseline" and r[2] not in new_tiers]
    manual = [r for r in old_rows if str(r[1]) in ("manual", "token") and r[0] not in taken]
    rewordings = sorted(earlier + new[1:], key=lambda r: (int(r[2]) if str(r[2]).lstrip("-").isdigit() else 99,
                                                          str(r[0])))
    return new[:1] + rewordings + manual


def reword(settings: Settings, rows: Any, prompt: str, method: str, distance: str, instruction: str, n: float,
           seed: float, system: str, base_url: str, llm_model: str, api_key: str,
           stop: threading.Event | None = None, vocabulary: Any = None,
           previous: dict | None = None) -> tuple[list[list[Any]], str, dict]:
    """Rewords ``prompt`` as a visitor of the server with ``settings`` asks; returns (table rows, a
    summary in Markdown, the JSON record of every tier in the table). ``stop`` abandons the LLM
    call; ``vocabulary`` (a loaded closed-vocabulary model) keeps synonyms to the words it can
    read; ``previous`` is the record of the rewordings already in the table."""
    _bounded_rows(rows)
    config = _config(method, distance, instruction, n, seed, system, "", base_url, llm_model)
    result = recaption(prompt, config, None, api_key=_api_key(api_key), settings=settings, visitor=True, stop=stop,
                       vocabulary=vocabulary)
    return _merge_rows(rows, result_rows(result)), _summary(result), merge_records(previous, result.to_dict())


def extract(settings: Settings, prompt: str, distance: str, instruction: str, n: float, seed: float,
            extract_prompt: str, base_url: str, llm_model: str, api_key: str,
            stop: threading.Event | None = None) -> tuple[dict, list[str]]:
    """Multi-turn stage 1: the prompt's parts (record for stage 2, and the five texts to edit)."""
    config = _config("multi-turn", distance, instruction, n, seed, "", extract_prompt, base_url, llm_model)
    parts = extract_parts(prompt, config, api_key=_api_key(api_key), settings=settings, visitor=True, stop=stop)
    return dataclasses.asdict(parts), [getattr(parts, k) for k in PART_NAMES]


def llm_reachable(settings: Settings, base_url: Any, api_key: Any) -> bool:
    """Whether a visitor's LLM call can run: the server's endpoint, or one they may type."""
    typed = bool((isinstance(base_url, str) and base_url.strip()) or (isinstance(api_key, str) and api_key.strip()))
    return settings.llm_configured or (settings.visitor_endpoints and typed)


def fuse(settings: Settings, rows: Any, parts_record: dict | None, edited: list[str], distance: str,
         instruction: str, n: float, seed: float, system: str, base_url: str, llm_model: str, api_key: str,
         stop: threading.Event | None = None, previous: dict | None = None,
         vocabulary: Any = None) -> tuple[list[list[Any]], str, dict]:
    """Multi-turn stage 2: fuses the (edited) parts into rewordings, with the LLM when one is
    reachable, else offline (the parts composed, then synonym rewordings of them). Without stage 1
    (no LLM to extract with) the parts are the ones typed by hand, of the table's baseline."""
    rows = _bounded_rows(rows)
    if len(edited) != len(PART_NAMES):
        raise BadInput(f"the parts must be {len(PART_NAMES)} texts: {', '.join(PART_NAMES)}")
    online = llm_reachable(settings, base_url, api_key)
    if parts_record:
        known = {f.name for f in dataclasses.fields(PromptParts)}
        parts = PromptParts(**{k: v for k, v in parts_record.items() if k in known})
    elif online:
        raise BadInput("extract the parts first (stage 1), or type them and fuse offline")
    else:
        base = next((str(r[3]).strip() for r in map(_norm_row, rows) if r[0] == "baseline"), "")
        if not base:
            raise BadInput("type a baseline prompt first: the parts reword it")
        parts = PromptParts(prompt=_text("the baseline", base))
    parts = dataclasses.replace(parts, **{k: _text(k, v) for k, v in zip(PART_NAMES, edited)})
    if online:
        config = _config("multi-turn", distance, instruction, n, seed, system, "", base_url, llm_model)
        result = fuse_parts(parts, config, None, api_key=_api_key(api_key), settings=settings, visitor=True,
                            stop=stop)
    else:
        result = fuse_offline(parts, _config("multi-turn", distance, instruction, n, seed, "", "", "", ""),
                              vocabulary=vocabulary)
    return _merge_rows(rows, result_rows(result)), _summary(result), merge_records(previous, result.to_dict())


def _summary(result: RecaptionResult) -> str:
    how = {"synonym": "the offline synonym rewriter", "llm": f"the LLM {code_text(result.config.model)}",
           "multi-turn": f"two LLM stages with {code_text(result.config.model)}" if result.config.model
           else "the typed parts, composed offline, and synonym rewordings of them"}[result.method]
    lines = [f"{len(result.variants)} rewording(s) by {how} in {result.elapsed_s:.1f} s."]
    if result.dropped:
        lines.append(f"Dropped {len(result.dropped)}: " + "; ".join(
            f"{md_text(v.text)} ({', '.join(v.flags)})" for v in result.dropped))
    if result.parts is not None and result.parts.edited():
        lines.append("Edited parts: " + ", ".join(result.parts.edited()))
    return "\n\n".join(lines)


# ----------------------------------------------------------------------------- wiring
@dataclass
class PromptTab:
    baseline: gr.Textbox
    table: gr.Dataframe
    record: gr.State


def build_prompt_tab(ctx: AppContext, model: gr.Dropdown, tokens: gr.State) -> PromptTab:
    """Adds the tab's components and events to the open Blocks/Tab context."""
    start_method = "llm" if ctx.settings.llm_configured else "synonym"
    methods, methods_off = method_choices(ctx.settings)
    gr.Markdown("Type a baseline prompt and reword it. Edit any prompt in the table, add your own (with a "
                "learned token, e.g. `a recording of <my-bell>`), then generate them side by side.")
    with gr.Row():
        baseline = gr.Textbox(example_prompt(ctx.start_model), label="Baseline prompt",
                              placeholder=example_prompt(ctx.start_model), scale=4, max_length=PROMPT_LIMIT,
                              elem_id="baseline-prompt")
        method = gr.Radio(methods, value=start_method, label="Rewording", scale=3, info=methods_off,
                          elem_id="rewording-method")
    examples = gr.Dataset(components=[baseline], samples=example_samples(ctx.start_model),
                          label="Example prompts for this model (click one to use it)", elem_id="prompt-examples")
    words_md = gr.Markdown(vocabulary_text(closed_vocabulary(ctx, ctx.start_model)), elem_id="model-words")
    with gr.Row():
        distance = gr.Radio(list(DISTANCE_CHOICES), value="light", label="Distance")
        n = gr.Slider(1, MAX_N, value=3, step=1, label="How many rewordings")
        # No precision: the value reaches the handler as sent (NaN too), which answers with a sentence.
        seed = gr.Number(0, minimum=0, step=1, label="Seed")
    instruction = gr.Textbox(label="Custom instruction (distance 'custom')", visible=False,
                             placeholder="describe it as heard from underwater")
    typed_endpoints = ctx.settings.visitor_endpoints
    with gr.Accordion("LLM settings", open=False):
        gr.Markdown("Any OpenAI-compatible endpoint (OpenAI, Ollama, vLLM, llama.cpp). Without a key or endpoint "
                    "the offline synonym rewriter works. A key typed here is used for the request only and never "
                    "stored; the server's own key goes only to the server's own endpoint.")
        with gr.Row():
            base_url = gr.Textbox(label="Endpoint (empty: the server's)", max_length=MAX_URL_CHARS,
                                  interactive=typed_endpoints, info=None if typed_endpoints else ENDPOINTS_OFF,
                                  placeholder="http://localhost:11434/v1" if typed_endpoints else "")
            llm_model = gr.Textbox(label="Model", value=ctx.settings.llm_model, max_length=MAX_MODEL_CHARS)
            api_key = gr.Textbox(label="API key (empty: the server's, for its own endpoint only)", type="password",
                                 max_length=MAX_KEY_CHARS)
        system = gr.Textbox(label="System prompt ({instruction} marks the custom instruction)", lines=4,
                            value=default_system_text(start_method, "light"), visible=start_method != "synonym",
                            info="Edit freely; changing the method or distance restores that one's default.")
        extract_prompt = gr.Textbox(label="Multi-turn stage 1 system prompt", lines=3, value=EXTRACT_SYSTEM_PROMPT,
                                    visible=False)
    with gr.Row():
        reword_btn = gr.Button("Reword", variant="primary", visible=start_method != "multi-turn")
        stop_btn = gr.Button("Stop", variant="stop", scale=0, min_width=80)
    # This tab's own job control: Stop here abandons this visitor's LLM request, nothing else.
    jobs = gr.State(SessionJobs(), delete_callback=close_session)
    parts_record = gr.State(None)
    with gr.Group(visible=False) as multi:
        can_extract = ctx.settings.llm_configured or ctx.settings.visitor_endpoints
        extract_btn = gr.Button("1 · Extract the parts", variant="primary", visible=can_extract)
        if not can_extract:
            gr.Markdown("**1 · Type the parts** of the baseline (at least the source): without an LLM, stage 1 "
                        "is yours. Stage 2 composes them into a prompt and rewords it with synonyms.",
                        elem_id="parts-offline")
        with gr.Row():
            part_boxes = [gr.Textbox(label=k) for k in PART_NAMES]
        fuse_btn = gr.Button("2 · Fuse the parts into rewordings", variant="primary")
    info = gr.Markdown()
    table = gr.Dataframe(headers=list(HEADERS), type="array", interactive=True, wrap=True, label="Variants",
                         datatype=["str", "str", "number", "str", "number", "number", "str"],
                         column_count=len(HEADERS), elem_id="variants-table")
    gr.Markdown(f"<small>{TIER_HELP}. Text cosine: mean-pooled text-encoder embeddings of the prompt and the "
                "baseline; after editing a prompt press *Rescore*.</small>")
    with gr.Row():
        add_box = gr.Textbox(label="Add a prompt", placeholder="a recording of <my-bell> on a tin roof", scale=3)
        add_btn = gr.Button("Add")
        remove_box = gr.Textbox(label="Remove the variant labelled", scale=2)
        remove_btn = gr.Button("Remove")
        rescore_btn = gr.Button("Rescore")
    record = gr.State(None)

    def on_method(m, d):
        return (gr.update(value=default_system_text(m, d), visible=m != "synonym"),
                gr.update(visible=m == "multi-turn"), gr.update(visible=m == "multi-turn"),
                gr.update(visible=m != "multi-turn"))

    method.change(on_method, [method, distance], [system, extract_prompt, multi, reword_btn], api_visibility="private")
    distance.change(lambda m, d: (default_system_text(m, d), gr.update(visible=d == "custom")), [method, distance],
                    [system, instruction], api_visibility="private")

    gpu_score = ctx.gpu(score_rows)

    @user_errors
    def on_score(model_name, rows, session_tokens, record_):
        backend, _ = ctx.backend(model_name)
        return gpu_score(backend, mark_edited_rows(rows, record_), usable_tokens(backend, session_tokens))

    @user_errors
    def on_reword(*args):
        *values, model_name, jobs_, previous = args
        return reword(ctx.settings, *values, stop=jobs_.begin(), vocabulary=closed_vocabulary(ctx, model_name),
                      previous=previous)

    @user_errors
    def on_extract(*args):
        *values, jobs_ = args
        record_, texts = extract(ctx.settings, *values, stop=jobs_.begin())
        return (record_, *texts)

    @user_errors
    def on_fuse(rows, record_, *args):
        *values, jobs_, previous, chosen = args
        edited, rest = values[: len(PART_NAMES)], values[len(PART_NAMES):]
        return fuse(ctx.settings, rows, record_, list(edited), *rest, stop=jobs_.begin(), previous=previous,
                    vocabulary=closed_vocabulary(ctx, chosen))

    llm_inputs = [base_url, llm_model, api_key, jobs]
    # the chosen model as session state: the rewording endpoint's public signature stays as it was
    chosen_model = gr.State(ctx.start_model)
    model.change(lambda name: name, model, chosen_model, api_visibility="private")
    model.change(baseline_hint, [model, baseline], baseline, api_visibility="private").then(
        set_baseline, [table, baseline], table, api_visibility="private")
    # Loads a closed-vocabulary model (small: the toy) to list its words; an open one loads nothing here.
    model.change(user_errors(lambda name: (gr.Dataset(samples=example_samples(name)),
                                           vocabulary_text(closed_vocabulary(ctx, name)))),
                 model, [examples, words_md], api_visibility="private")
    examples.click(lambda sample: sample[0] if isinstance(sample, list) and sample else gr.skip(), examples,
                   baseline, api_visibility="private").then(set_baseline, [table, baseline], table,
                                                           api_visibility="private")
    reword_btn.click(on_reword, [table, baseline, method, distance, instruction, n, seed, system, *llm_inputs[:-1],
                                chosen_model, jobs, record],
                     [table, info, record], api_name="recaption", concurrency_limit=4).success(
        on_score, [model, table, tokens, record], table, api_name="score_variants", concurrency_limit=1,
        concurrency_id="gpu")
    extract_btn.click(
        on_extract, [baseline, distance, instruction, n, seed, extract_prompt, *llm_inputs],
        [parts_record, *part_boxes], api_name="extract_parts", concurrency_limit=4)
    fuse_btn.click(on_fuse, [table, parts_record, *part_boxes, distance, instruction, n, seed, system, *llm_inputs,
                             record, chosen_model],
                   [table, info, record], api_name="fuse_parts", concurrency_limit=4).success(
        on_score, [model, table, tokens, record], table, api_visibility="private", concurrency_limit=1, concurrency_id="gpu")
    stop_btn.click(stop_request, jobs, None, concurrency_limit=None, api_name="stop_rewording")
    for event in (baseline.submit, baseline.blur):
        event(set_baseline, [table, baseline], table, api_visibility="private")
    add_btn.click(user_errors(lambda rows, text, toks, base: add_variant(rows, text, list(toks or {}), base)),
                  [table, add_box, tokens, baseline], table, api_name="add_variant").success(
        lambda: "", None, add_box, api_visibility="private")
    remove_btn.click(user_errors(remove_variant), [table, remove_box], table, api_name="remove_variant")
    rescore_btn.click(on_score, [model, table, tokens, record], table, api_visibility="private", concurrency_limit=1,
                      concurrency_id="gpu")
    return PromptTab(baseline=baseline, table=table, record=record)
