"""Recaptioning against a real local chat-completions server, the guards, distances and CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import socket

import pytest
from openai_stub import OpenAIStub, Reply

from recap.rewording.llm import LLMError, parse_list_answer
from recap.rewording.multiturn import extract_parts, fuse_parts
from recap.rewording.checks import text_cosine, word_edit_distance
from recap.rewording.base import (
    FLAG_DUPLICATE,
    FLAG_SALVAGED,
    FLAG_SAME_AS_BASELINE,
    LIGHT_SYSTEM_PROMPT,
    STRONG_SYSTEM_PROMPT,
    RecaptionConfig,
    default_system_prompt,
)
from recap.rewording.recaption import recaption
from recap.rewording.wordnet import wordnet_available

SECRET = "sk-test-5ecret-do-not-leak-0123456789"
BASELINE = "rain on a tin roof"
needs_wordnet = pytest.mark.skipif(
    not wordnet_available(), reason="WordNet not installed: apt-get install wordnet-base"
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RECAP_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RECAP_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def tiny():
    from recap.backends.loading import load_backend

    return load_backend("tiny")


def cfg(stub: OpenAIStub, **kw) -> RecaptionConfig:
    """A config for the stub with millisecond backoff, so retries do not slow the tests."""
    return RecaptionConfig(
        **{"base_url": stub.base_url, "model": "stub-model", "backoff_s": 0.001, "timeout_s": 5.0} | kw
    )


# --------------------------------------------------------------------------------------------
# Answers


def test_json_answer_gives_variants_and_a_complete_record():
    answer = {"rewordings": ["rain on a metal roof", "rainfall on a tin roof", "rain drumming on a tin roof"]}
    with OpenAIStub(script=[Reply.json(answer)]) as stub:
        result = recaption(BASELINE, cfg(stub, n=3, distance="strong", seed=5, temperature=0.3), api_key=SECRET)
        sent = stub.chat_requests[0].body

    assert [v.text for v in result.variants] == answer["rewordings"]
    assert {(v.method, v.distance, v.tier) for v in result.variants} == {("llm", "strong", 2)}
    # The request: the default strong system prompt, structured output, the seed and temperature.
    assert sent["messages"][0] == {"role": "system", "content": STRONG_SYSTEM_PROMPT}
    assert BASELINE in sent["messages"][1]["content"]
    assert sent["response_format"]["type"] == "json_schema"
    assert (sent["seed"], sent["temperature"], sent["model"]) == (5, 0.3, "stub-model")
    # The record repeats it: messages, model, parameters, raw answer, timings.
    record = result.to_dict()
    assert record["system_prompt"] == STRONG_SYSTEM_PROMPT
    ex = record["exchange"][0]
    assert ex["request"]["messages"] == sent["messages"]
    assert ex["model"] == "stub-model" and ex["request"]["seed"] == 5
    assert json.loads(ex["response"]["content"]) == answer
    assert ex["elapsed_s"] >= 0 and ex["attempts"][-1]["outcome"] == "ok"
    assert record["config"]["model"] == "stub-model" and record["config"]["distance"] == "strong"
    json.dumps(record)  # JSON-ready


def test_plain_text_list_answer_is_parsed():
    text = (
        "Here are three rewordings:\n\n"
        '1. rain on a metal roof\n2) "rain pattering on tin"\n- **downpour on a tin roof**\n'
    )
    with OpenAIStub(script=[Reply.text(text)]) as stub:
        result = recaption(BASELINE, cfg(stub, use_json_schema=False), api_key=SECRET)
        assert "response_format" not in stub.chat_requests[0].body
    assert [v.text for v in result.variants] == [
        "rain on a metal roof",
        "rain pattering on tin",
        "downpour on a tin roof",
    ]


def test_duplicates_and_baseline_copies_are_dropped_and_kept_on_request():
    answer = {"rewordings": ["Rain on a tin roof.", "rain on a metal roof", "rain on a metal roof!", "rain on steel"]}
    with OpenAIStub(script=[Reply.json(answer), Reply.json(answer)]) as stub:
        dropped = recaption(BASELINE, cfg(stub, n=3), api_key=SECRET)
        kept = recaption(BASELINE, cfg(stub, n=3, drop_duplicates=False), api_key=SECRET)

    assert [v.text for v in dropped.variants] == ["rain on a metal roof", "rain on steel"]
    assert [(v.text, v.flags) for v in dropped.dropped] == [
        ("Rain on a tin roof.", [FLAG_SAME_AS_BASELINE]),
        ("rain on a metal roof!", [FLAG_DUPLICATE]),
    ]
    assert [v.flags for v in kept.variants] == [[FLAG_SAME_AS_BASELINE], [], [FLAG_DUPLICATE]]
    assert kept.dropped[0].text == "rain on steel" and "extra" in kept.dropped[0].flags  # n=3


def test_rate_limit_then_success_is_retried():
    with OpenAIStub(script=[Reply.error(429, "slow down"), Reply.json({"rewordings": ["rain on metal"]})]) as stub:
        result = recaption(BASELINE, cfg(stub, n=1), api_key=SECRET)
        assert len(stub.chat_requests) == 2
    assert [v.text for v in result.variants] == ["rain on metal"]
    assert [a["outcome"] for a in result.exchange[0]["attempts"]] == ["http 429", "ok"]


def test_server_error_forever_gives_up_after_the_retries():
    with OpenAIStub(default=Reply.error(500, "boom")) as stub:
        with pytest.raises(LLMError) as info:
            recaption(BASELINE, cfg(stub, max_retries=2), api_key=SECRET)
        assert len(stub.chat_requests) == 3
    assert info.value.reason == "server-error"
    assert "3 tries" in str(info.value) and stub.base_url in str(info.value)
    assert [a["outcome"] for a in info.value.exchange[0]["attempts"]] == ["http 500"] * 3


def test_slow_answer_past_the_timeout_fails_as_timeout():
    with OpenAIStub(default=Reply.hang()) as stub:
        with pytest.raises(LLMError) as info:
            recaption(BASELINE, cfg(stub, timeout_s=0.2, max_retries=1), api_key=SECRET)
        assert len(stub.chat_requests) == 2
    assert info.value.reason == "timeout"
    assert "within 0.2 s" in str(info.value)


def test_cut_off_json_keeps_its_complete_items_and_garbage_is_unparsable():
    truncated = '{"rewordings": ["rain on a metal roof", "rain drumming on tin", "rain on a cor'
    with OpenAIStub(script=[Reply.text(truncated), Reply.text('{"rewordings": [')]) as stub:
        result = recaption(BASELINE, cfg(stub), api_key=SECRET)
        with pytest.raises(LLMError) as info:
            recaption(BASELINE, cfg(stub), api_key=SECRET)
    assert [v.text for v in result.variants] == ["rain on a metal roof", "rain drumming on tin"]
    assert all(FLAG_SALVAGED in v.flags for v in result.variants)
    assert info.value.reason == "unparsable"
    assert info.value.exchange[0]["response"]["content"] == '{"rewordings": ['


def test_a_body_that_is_not_a_chat_completion_is_reported():
    script = [Reply.raw(200, b"<html>proxy error</html>"), Reply.raw(200, b'{"choices": []}')]
    with OpenAIStub(script=script) as stub:
        for words in ("not a chat completion", "no choices"):
            with pytest.raises(LLMError) as info:
                recaption(BASELINE, cfg(stub), api_key=SECRET)
            assert info.value.reason == "unparsable" and words in str(info.value)


def test_server_without_structured_output_is_asked_again_in_plain_text():
    script = [Reply.error(400, "response_format json_schema is not supported"), Reply.text("1. rain on metal")]
    with OpenAIStub(script=script) as stub:
        result = recaption(BASELINE, cfg(stub, n=1), api_key=SECRET)
        first, second = (r.body for r in stub.chat_requests)
    assert "response_format" in first and "response_format" not in second
    assert [v.text for v in result.variants] == ["rain on metal"]
    assert "plain-text" in result.exchange[0]["fallback"]


@pytest.mark.parametrize(
    ("stub_kw", "reason", "words"),
    [
        ({"models": ["other-model"]}, "model-not-found", ["'stub-model'", "not found"]),
        ({"api_key": "sk-the-right-one"}, "auth", ["rejected the API key"]),
        ({"script": [Reply.text(None, refusal="I can't help with that.")]}, "refusal", ["refused"]),
        ({"script": [Reply.text("I'm sorry, but I can't reword that.")]}, "refusal", ["refused"]),
    ],
)
def test_failures_say_what_failed(stub_kw, reason, words):
    with OpenAIStub(**stub_kw) as stub:
        with pytest.raises(LLMError) as info:
            recaption(BASELINE, cfg(stub), api_key=SECRET)
        assert len(stub.chat_requests) == 1  # none of these is worth a retry
    assert info.value.reason == reason
    assert all(w in str(info.value) for w in words)
    assert SECRET not in str(info.value)


def test_unreachable_server_and_missing_endpoint():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = RecaptionConfig(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, backoff_s=0.001, timeout_s=2)
    with pytest.raises(LLMError) as info:
        recaption(BASELINE, config, api_key=SECRET)
    assert info.value.reason == "unreachable" and f"127.0.0.1:{port}" in str(info.value)

    with pytest.raises(LLMError) as info:
        recaption(BASELINE, RecaptionConfig(method="llm"))
    assert info.value.reason == "no-key" and "OPENAI_API_KEY" in str(info.value)


@needs_wordnet
def test_auto_uses_synonyms_without_an_endpoint_and_the_llm_with_one(monkeypatch):
    offline = recaption(BASELINE, RecaptionConfig(n=1))
    assert offline.method == "synonym" and offline.exchange == []
    assert offline.variants and offline.variants[0].method == "synonym" and offline.variants[0].changes

    with OpenAIStub(script=[Reply.json({"rewordings": ["rain on metal"]})]) as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        monkeypatch.setenv("RECAP_LLM_MODEL", "env-model")
        online = recaption(BASELINE, RecaptionConfig(n=1))
        assert stub.chat_requests[0].body["model"] == "env-model"
    assert online.method == "llm" and online.variants[0].method == "llm"


@needs_wordnet
def test_names_of_real_places_and_brands_are_flagged():
    answer = {"rewordings": ["rain on a tin roof near Paris", "rain on a Yamaha drum", "rain on a metal roof"]}
    with OpenAIStub(script=[Reply.json(answer)]) as stub:
        result = recaption(BASELINE, cfg(stub), api_key=SECRET)
    assert [v.flags for v in result.variants] == [["names:Paris"], ["names:Yamaha"], []]


def test_custom_distance_and_edited_system_prompt_are_sent_and_saved():
    with OpenAIStub(script=[Reply.json({"rewordings": ["rain heard underwater"]})] * 2) as stub:
        custom = recaption(
            BASELINE, cfg(stub, n=1, distance="custom", custom_instruction="as heard underwater"), api_key=SECRET
        )
        edited = recaption(BASELINE, cfg(stub, n=1, system_prompt="Only JSON. Be brief."), api_key=SECRET)
        sent = [r.body["messages"][0]["content"] for r in stub.chat_requests]
    assert "as heard underwater" in sent[0] and custom.variants[0].tier == 3
    assert custom.system_prompt == sent[0] == default_system_prompt("custom", "as heard underwater")
    assert sent[1] == edited.system_prompt == "Only JSON. Be brief."
    assert default_system_prompt("light") == LIGHT_SYSTEM_PROMPT
    with pytest.raises(ValueError, match="custom_instruction"):
        recaption(BASELINE, RecaptionConfig(distance="custom"))


# --------------------------------------------------------------------------------------------
# The key never leaks


def test_key_never_appears_in_logs_errors_or_saved_results(caplog, capsys, tmp_path):
    caplog.set_level(logging.DEBUG)  # every logger, the openai/httpx ones included
    echo = f"invalid request for key {SECRET}"
    outputs = []
    with OpenAIStub(
        script=[
            Reply.error(429),
            Reply.json({"rewordings": [f"rain {SECRET}", "rain on metal"]}),
            Reply.error(400, echo),
            Reply.error(400, echo),
        ]
    ) as stub:
        result = recaption(BASELINE, cfg(stub), api_key=SECRET)
        outputs.append(json.dumps(result.to_dict()))
        outputs.append(repr(result))
        with pytest.raises(LLMError) as info:
            recaption(BASELINE, cfg(stub), api_key=SECRET)
        assert stub.chat_requests[0].headers["authorization"] == f"Bearer {SECRET}"  # it was used
    outputs += [str(info.value), json.dumps(info.value.exchange), caplog.text]
    captured = capsys.readouterr()
    outputs += [captured.out, captured.err]
    assert "***" in outputs[0]  # a server that echoes the key back gets it scrubbed
    for text in outputs:
        assert SECRET not in text


def test_cli_never_prints_or_stores_the_key(monkeypatch, capsys, tmp_path):
    from recap.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("rain on a tin roof\n")
    out = tmp_path / "variants.csv"
    with OpenAIStub(
        script=[Reply.json({"rewordings": ["rain on metal"]})], default=Reply.error(401, "bad key")
    ) as stub:
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        assert main(["recaption", "--file", str(prompts), "--out", str(out), "--n", "1"]) == 0
        assert main(["recaption", "--prompt", "wind", "--out", str(tmp_path / "one.json")]) == 1
    captured = capsys.readouterr()
    assert "rejected the API key" in captured.err
    for text in [captured.out, captured.err] + [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]:
        assert SECRET not in text


# --------------------------------------------------------------------------------------------
# Multi-turn


@needs_wordnet
def test_multi_turn_extracts_parts_lets_them_be_edited_then_fuses():
    parts_answer = {
        "source": "rain",
        "action": "falling",
        "setting": "tin roof",
        "perspective": "close-up",
        "texture": "metallic patter",
    }
    fused = {
        "rewordings": ["close-up metallic patter of rain falling in a cave", "rain falling in a cave, heard up close"]
    }
    with OpenAIStub(script=[Reply.json(parts_answer), Reply.json(fused)]) as stub:
        parts = extract_parts(BASELINE, cfg(stub), api_key=SECRET)
        assert parts.fields() == parts_answer
        edited = dataclasses.replace(parts, setting="a cave")
        result = fuse_parts(edited, cfg(stub, n=2, distance="strong"), api_key=SECRET)
        fuse_request = stub.chat_requests[1].body

    assert "setting: a cave" in fuse_request["messages"][1]["content"]
    assert "tin roof" not in fuse_request["messages"][1]["content"]
    assert result.method == "multi-turn" and [v.method for v in result.variants] == ["multi-turn"] * 2
    assert [e["stage"] for e in result.exchange] == ["extract", "fuse"]
    record = result.to_dict()
    assert record["parts"]["edited"] == ["setting"] and record["parts"]["extracted"]["setting"] == "tin roof"
    assert result.baseline == BASELINE


def test_recaption_runs_both_stages_for_the_multi_turn_method():
    parts = {"source": "rain", "action": "", "setting": "tin roof", "perspective": "", "texture": ""}
    with OpenAIStub(script=[Reply.json(parts), Reply.json({"rewordings": ["rain drumming on tin"]})]) as stub:
        result = recaption(BASELINE, cfg(stub, n=1, method="multi-turn"), api_key=SECRET)
        assert len(stub.chat_requests) == 2
    assert result.method == "multi-turn" and result.config.method == "multi-turn"
    assert [v.text for v in result.variants] == ["rain drumming on tin"]
    assert result.parts is not None and result.parts.edited() == []


def test_parts_answered_as_lines_are_read():
    text = "Source: rain\nAction: falling\nSetting: on a tin roof\n"
    with OpenAIStub(script=[Reply.text(text)]) as stub:
        parts = extract_parts(BASELINE, cfg(stub, use_json_schema=False), api_key=SECRET)
    assert (parts.source, parts.action, parts.setting, parts.texture) == ("rain", "falling", "on a tin roof", "")


# --------------------------------------------------------------------------------------------
# Distances and token limits on the tiny backend


def test_text_cosine_is_one_for_itself_and_symmetric(tiny):
    a, b = "rain on a tin roof", "a dog barking in a hall"
    assert text_cosine(tiny, a, a) == pytest.approx(1.0, abs=1e-6)
    assert text_cosine(tiny, a, b) == pytest.approx(text_cosine(tiny, b, a), abs=1e-6)
    assert text_cosine(tiny, a, b) < 0.999


def test_word_edit_distance():
    assert word_edit_distance("Rain on a tin roof.", "rain on a tin roof") == 0
    assert word_edit_distance("rain on a tin roof", "rain on a metal roof") == 1
    assert word_edit_distance("a b c", "c b a") == word_edit_distance("c b a", "a b c") == 2


@needs_wordnet
def test_variants_get_cosine_and_over_long_ones_are_flagged(tiny):
    long = "rain " + " ".join(["on a very long and winding metal roof"] * 8)
    with OpenAIStub(script=[Reply.json({"rewordings": ["rain on a metal roof", long]})]) as stub:
        result = recaption(BASELINE, cfg(stub, n=2), tiny, api_key=SECRET)
    short, too_long = result.variants
    assert 0 < short.text_cosine < 1 and short.word_edits == 1
    assert too_long.flags == [f"over-token-limit:{tiny.count_tokens(long)}>{tiny.max_prompt_tokens}"]


# --------------------------------------------------------------------------------------------
# CLI


def _by_prompt(body: dict) -> Reply:
    prompt = body["messages"][1]["content"].split("\n")[0].removeprefix("Sound description: ")
    if prompt == "fails":
        return Reply.error(503, "overloaded")
    return Reply.json({"rewordings": [f"{prompt}, reworded"]})


def test_cli_file_run_resumes_after_an_interruption(monkeypatch, capsys, tmp_path):
    from recap.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# thesis prompts\nrain on a tin roof\n\nfails\nwind in pines\n")
    out = tmp_path / "variants.csv"
    args = ["recaption", "--file", str(prompts), "--out", str(out), "--n", "1", "--retries", "0"]
    with OpenAIStub(default=_by_prompt) as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        assert main(args) == 1  # stops at "fails"; the first prompt is saved
        assert "run the same command again to resume" in capsys.readouterr().err
        rows = list(csv.DictReader(out.open()))
        assert [(r["label"], r["text"]) for r in rows] == [
            ("baseline", "rain on a tin roof"),
            ("reword-1a", "rain on a tin roof, reworded"),
        ]
        with out.open("a") as f:
            f.write("2,fails,baseline,fails,base")  # half a line, as a crash mid-append leaves it

        prompts.write_text("rain on a tin roof\nwind in pines\n")
        asked_before = len(stub.chat_requests)
        assert main(args) == 0
        asked = [r.body["messages"][1]["content"] for r in stub.chat_requests[asked_before:]]

    assert len(asked) == 1 and "wind in pines" in asked[0]  # the done prompt is not asked again
    rows = list(csv.DictReader(out.open()))
    assert [r["text"] for r in rows] == [
        "rain on a tin roof",
        "rain on a tin roof, reworded",
        "wind in pines",
        "wind in pines, reworded",
    ]
    log = [json.loads(line) for line in out.with_name("variants.exchange.jsonl").read_text().splitlines()]
    assert [e["baseline"] for e in log] == ["rain on a tin roof", "wind in pines"]
    assert "1 already done" in capsys.readouterr().out

    # Another distance is another piece of work: every prompt is asked again, into the same CSV.
    with OpenAIStub(default=_by_prompt) as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        assert main([*args, "--distance", "strong"]) == 0
        assert len(stub.chat_requests) == 2
    rows = list(csv.DictReader(out.open()))
    assert [r["label"] for r in rows if r["distance"] == "strong"] == ["baseline", "reword-2a"] * 2


@needs_wordnet
def test_cli_single_prompt_prints_method_and_cosine(capsys):
    from recap.cli import main

    assert (
        main(
            ["recaption", "--prompt", "Heavy rain on a tin roof", "--n", "2", "--distance", "strong", "--model", "tiny"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "method: synonym" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("reword-2")]
    assert len(lines) == 2 and all(" synonym " in ln for ln in lines)
    assert "1.0000" in out  # the baseline's cosine with itself


def test_parser_reads_numbered_json_in_a_code_fence():
    assert parse_list_answer('Sure!\n```json\n["a", "b"]\n```').items == ["a", "b"]
