"""`recap recaption`: rewordings of one prompt, or of a prompt file into a resumable CSV.

The API key is read from the environment only (never a flag: flags end up in shell history and
process lists). OPENAI_API_KEY goes only to the configured endpoint (OPENAI_BASE_URL, or
api.openai.com); an endpoint given with --base-url gets no key, or the one in the variable that
--api-key-env names.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from recap.rewording.llm import LLMError
from recap.paths import atomic_write_bytes, atomic_write_json
from recap.rewording.base import RecaptionConfig, RecaptionResult
from recap.rewording.recaption import recaption
from recap.variants import DISTANCES, REWORDING_METHODS
from recap.rewording.wordnet import WordNetMissingError

# One row per prompt variant; "rows" (on every row) is how many rows the prompt has, so a prompt
# cut short by a crash is recognised and redone.
CSV_COLUMNS = "prompt_id baseline label text method distance tier text_cosine word_edits flags rows".split()
# Errors that concern one prompt only: a file run notes them and goes on with the next prompt.
_PER_PROMPT = ("refusal", "unparsable")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recaption",
        help="reword prompts by LLM or offline WordNet synonyms",
        description="Reword a prompt (or every line of a file) at a light, strong or custom distance. "
        "Uses the LLM at OPENAI_BASE_URL / api.openai.com when OPENAI_API_KEY or OPENAI_BASE_URL is set, "
        "else the offline synonym rewriter.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the baseline prompt")
    src.add_argument("--file", type=Path, help="text file, one prompt per line ('#' lines skipped)")
    p.add_argument("--n", type=int, default=3, help="rewordings per prompt (default 3)")
    p.add_argument("--distance", choices=DISTANCES, default="light", help="light = tier 1, strong = tier 2 (the thesis's batches 1 and 2)")
    p.add_argument("--instruction", default=None, help="what to do for --distance custom")
    p.add_argument("--method", choices=REWORDING_METHODS, default="auto", help="default: llm if configured, else synonym")
    p.add_argument("--system-prompt", default=None, help="replace the default system prompt")
    p.add_argument("--llm-model", default=None, help="chat model (default $RECAP_LLM_MODEL)")
    p.add_argument("--base-url", "--llm-base-url", dest="llm_base_url", default=None,
                   help="OpenAI-compatible endpoint (default $OPENAI_BASE_URL); OPENAI_API_KEY is sent to no other")
    p.add_argument("--api-key-env", default=None, metavar="NAME",
                   help="environment variable holding the key for this call (e.g. for a --base-url endpoint)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one LLM answer")
    p.add_argument("--retries", type=int, default=3, help="retries on 429 / 5xx / timeouts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.9)
    p.add_argument("--no-json-schema", action="store_true", help="ask for plain text, not structured output")
    p.add_argument("--keep-duplicates", action="store_true", help="flag repeats instead of dropping them")
    p.add_argument(
        "--model",
        default=None,
        help="backend whose text encoder scores cosine and token limits (e.g. tiny); none: no cosine",
    )
    p.add_argument("--device", default=None, help="torch device for --model")
    p.add_argument("--dtype", default=None, help="torch dtype for --model")
    p.add_argument("--out", type=Path, default=None, help="CSV (appended, resumable) or, with --prompt, .json")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> RecaptionConfig:
    return RecaptionConfig(
        n=args.n,
        distance=args.distance,
        custom_instruction=args.instruction,
        system_prompt=args.system_prompt,
        method=args.method,
        model=args.llm_model,
        base_url=args.llm_base_url,
        timeout_s=args.timeout,
        max_retries=args.retries,
        seed=args.seed,
        temperature=args.temperature,
        use_json_schema=not args.no_json_schema,
        drop_duplicates=not args.keep_duplicates,
    )


def _api_key(args: argparse.Namespace) -> str | None:
    """The key named by --api-key-env (read from the environment), or None."""
    if not args.api_key_env:
        return None
    key = os.environ.get(args.api_key_env)
    if not key:
        raise ValueError(f"--api-key-env names {args.api_key_env}, which is not set in the environment")
    return key


def run(args: argparse.Namespace) -> int:
    config = _config(args)
    config.validate()
    api_key = _api_key(args)
    backend = None
    if args.model:
        from recap.cli.common import open_backend

        backend = open_backend(args)
    try:
        if args.prompt is not None:
            return _run_one(args.prompt, config, backend, args.out, api_key)
        if args.out is None or args.out.suffix.lower() != ".csv":
            raise ValueError("--file needs --out NAME.csv (a CSV that the run appends to and resumes from)")
        return _run_file(args.file, args.out, config, backend, api_key)
    except (LLMError, WordNetMissingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _method_line(result: RecaptionResult) -> str:
    if result.method == "synonym":
        return "method: synonym (WordNet, offline)"
    return f"method: {result.method} (model {result.config.model} at {result.config.base_url or 'api.openai.com'})"


def _run_one(prompt: str, config: RecaptionConfig, backend, out: Path | None, api_key: str | None = None) -> int:
    result = recaption(prompt, config, backend, api_key=api_key)
    print(_method_line(result))
    scored = backend is not None
    rows = [["baseline", "baseline", 0, 1.0 if scored else "-", 0, "", result.baseline]]
    for label, v in zip(result.labels()[1:], result.variants):
        cos = v.text_cosine if v.text_cosine is not None else "-"
        rows.append([label, v.method, v.tier, cos, v.word_edits, " ".join(v.flags), v.text])
    from recap.cli.common import print_table

    print_table(["label", "method", "tier", "cosine", "edits", "flags", "text"], rows)
    for v in result.dropped:
        print(f"dropped ({', '.join(v.flags)}): {v.text}")
    if len(result.variants) < config.n:
        print(f"note: {len(result.variants)} of {config.n} rewordings kept")
    if not scored:
        print("note: pass --model NAME (e.g. tiny) for the text-embedding cosine to the baseline")
    if out is not None:
        if out.suffix.lower() == ".csv":
            done = _prepare_resume(out, _log_path(out))
            if (result.baseline, config.distance) not in done:
                _append(out, _log_path(out), 1, result)
        else:
            atomic_write_json(out, result.to_dict())
        print(f"saved {out}")
    return 0


# --------------------------------------------------------------------------------------------
# Prompt files: one CSV chunk per prompt, resumable


def _log_path(out: Path) -> Path:
    return out.with_name(out.stem + ".exchange.jsonl")


def read_prompts(path: Path) -> list[str]:
    """Non-empty, non-comment lines of a prompt file, each once, in order."""
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    return list(dict.fromkeys(ln for ln in lines if ln and not ln.startswith("#")))


def result_rows(prompt_id: int, result: RecaptionResult) -> list[list[object]]:
    """CSV rows of one prompt: the baseline, then each kept rewording (columns: CSV_COLUMNS)."""
    n_rows = 1 + len(result.variants)
    scored = any(v.text_cosine is not None for v in result.variants)
    distance = result.config.distance
    base = result.baseline
    rows: list[list[object]] = [
        [prompt_id, base, "baseline", base, "baseline", distance, 0, 1.0 if scored else "", 0, "", n_rows]
    ]
    for label, v in zip(result.labels()[1:], result.variants):
        cos = "" if v.text_cosine is None else round(v.text_cosine, 6)
        flags = " ".join(v.flags)
        rows.append([prompt_id, base, label, v.text, v.method, v.distance, v.tier, cos, v.word_edits, flags, n_rows])
    return rows


def _complete_text(path: Path) -> str:
    # An interrupted append can leave half a line at the end; it is not part of the record.
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return text if text.endswith("\n") or not text else text[: text.rfind("\n") + 1]


Done = set[tuple[str, str]]
"""(baseline, distance) pairs already complete: a file can be run once per distance into one CSV."""


def _prepare_resume(out: Path, log: Path) -> Done:
    """What ``out`` already holds complete; drops partly written prompts from the CSV and log."""
    text = _complete_text(out)
    if not text:
        return set()
    header = next(csv.reader(io.StringIO(text)))
    if header != CSV_COLUMNS:
        raise ValueError(f"{out} is not a `recap recaption` CSV (columns {header}); choose another --out")
    rows = list(csv.DictReader(io.StringIO(text)))
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault((row["baseline"], row["distance"]), []).append(row)
    # A prompt is complete when all the rows its first row announces are there.
    done = {key for key, g in groups.items() if g[0]["rows"].isdigit() and len(g) == int(g[0]["rows"])}
    kept = [row for row in rows if (row["baseline"], row["distance"]) in done]
    if len(kept) != len(rows) or text != out.read_text(encoding="utf-8"):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_bytes(out, buf.getvalue().encode("utf-8"))
    if log.exists():
        lines = [ln for ln in _complete_text(log).splitlines() if ln.strip()]
        keep = [ln for ln in lines if _log_key(json.loads(ln)) in done]
        if len(keep) != len(lines) or _complete_text(log) != log.read_text(encoding="utf-8"):
            atomic_write_bytes(log, "".join(ln + "\n" for ln in keep).encode("utf-8"))
    return done


def _log_key(entry: dict) -> tuple[str, str]:
    return entry.get("baseline", ""), entry.get("config", {}).get("distance", "")


def _append_text(path: Path, text: str) -> None:
    # One write per prompt, flushed to disk before the next prompt starts.
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _append(out: Path, log: Path, prompt_id: int, result: RecaptionResult) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # The log first: the CSV row marks a prompt as done, so it must come last.
    _append_text(log, json.dumps({"prompt_id": prompt_id, **result.to_dict()}) + "\n")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if not out.exists() or out.stat().st_size == 0:
        writer.writerow(CSV_COLUMNS)
    writer.writerows(result_rows(prompt_id, result))
    _append_text(out, buf.getvalue())


def _run_file(path: Path, out: Path, config: RecaptionConfig, backend, api_key: str | None = None) -> int:
    prompts = read_prompts(path)
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    log = _log_path(out)
    done = _prepare_resume(out, log)
    todo = [(i, p) for i, p in enumerate(prompts, 1) if (p, config.distance) not in done]
    skipped: list[str] = []
    n_done = n_variants = 0
    bar = tqdm(
        total=len(prompts), initial=len(prompts) - len(todo), desc="recaptioning", unit="prompt", file=sys.stderr
    )
    try:
        for prompt_id, prompt in todo:
            try:
                result = recaption(prompt, config, backend, api_key=api_key)
            except LLMError as e:
                if e.reason not in _PER_PROMPT:
                    raise LLMError(
                        e.reason, f"{e} ({n_done} new prompts saved; run the same command again to resume)", e.exchange
                    ) from None
                tqdm.write(f"skipped prompt {prompt_id} ({e.reason}): {e}", file=sys.stderr)
                skipped.append(prompt)
                bar.update(1)
                continue
            _append(out, log, prompt_id, result)
            n_done += 1
            n_variants += len(result.variants)
            bar.update(1)
    finally:
        bar.close()
    print(
        f"{n_done} prompts reworded ({n_variants} variants), {len(prompts) - len(todo)} already done"
        f" -> {out} (exchange log {log})"
    )
    if skipped:
        print(f"{len(skipped)} prompts skipped; run the same command again to retry them")
    return 0
