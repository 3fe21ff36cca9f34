"""The "About" tab: the method, the papers, and what this server is running."""

from __future__ import annotations

import platform
from importlib import metadata

import gradio as gr

from recap.backends.registry import BackendSpec, get_spec, list_specs
from recap.ui.common import code_text, md_text
from recap.ui.context import AppContext, zero_gpu

METHOD = """
### The method

A text-to-audio diffusion model turns a prompt into sound through its text encoder, so the exact
wording steers what comes out. recap makes that effect measurable: it rewords a baseline prompt
("recaptions" it) lightly or strongly — with an LLM, an offline synonym rewriter, or a multi-turn
pipeline that first extracts the prompt's parts and then fuses (edited) parts into new prompts —
and can teach the model a new word for a particular sound by Textual Inversion, which learns only
that word's embedding from a few clips while every model weight stays frozen. All variants are
generated **from the same starting noise per seed**, so within a column of the grid the wording is
the only thing that differs.

The clips are then compared by ear, by magnitude spectrograms clipped to a frequency-bin range
(bins 100–150 of 512 by default, as in the thesis figures), and by the cosine similarity and the L2
distance of unit-normalised VAE latents between each variant and the baseline of the same seed —
set against the spread between seeds of one prompt, which is the generation's own variance — plus
the cosine of the prompts' text embeddings and an encode–decode reconstruction check. Blind A/B and
1–5 listening studies collect human judgements of the same clips.

**Papers.** E. M. Matthews, *Text Recaptioning for Audio Diffusion Models* (MS thesis, UIUC, 2025) —
the method, metrics and figures; M. Plitsis, T. Kouzelis, G. Paraskevopoulos, V. Katsouros,
Y. Panagakis, *Investigating Personalization Methods in Text to Music Generation* (2023) — Textual
Inversion on AudioLDM, CLAP and music metrics, A/B studies; Y. Yuan et al., *DreamAudio: Customized
Text-to-Audio Generation with Diffusion Models* (2025) — reference-based customisation and its
evaluation; D. Lawrence, *Resonating Visuals: Generative AI Strategies for Capturing the Essence of
Music in Image Form* (MS thesis, UT Austin, 2024) — multi-turn LLM prompt pipelines.
"""

# What the experimenter role is on this server (Settings.experimenter_access); raters need only a study link.
STUDY_ACCESS = {
    "open": "experimenter functions open to anyone at this machine (a local server without a password)",
    "password": "experimenter functions behind the experimenter password; raters need only a study link",
    "off": ("experimenter functions off (a public server without `RECAP_EXPERIMENTER_PASSWORD`); "
            "raters need only a study link"),
}

_PACKAGES = ("recap", "torch", "diffusers", "transformers", "gradio", "openai", "librosa")


def versions() -> dict[str, str]:
    """Installed versions, read from package metadata (nothing heavy is imported)."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


SUPPORT_HEADERS = ("Model", "Family", "Classifier-free guidance", "Negative prompt", "Textual Inversion",
                   "Style transfer", "Max seconds")


def _support_cells(spec: BackendSpec) -> tuple[str, ...]:
    if spec.fixed_guidance is None:
        cfg = f"yes (default {spec.defaults.guidance:g})"
    else:
        cfg = f"no: fixed at {spec.fixed_guidance:g} (guidance-distilled)"
    # Textual Inversion and transfer are part of every backend (ti_loss, noise_to are abstract in AudioBackend).
    return (spec.family, cfg, "yes" if spec.negative_prompts else "no", "yes", "yes", f"{spec.max_seconds:.4g}")


def support_table(specs: list[BackendSpec] | None = None) -> str:
    """What each registered model supports, as a Markdown table (the README's is this one).

    Consecutive models that support the same things (the AudioLDM sizes) share a row.
    """
    rows: list[tuple[list[str], tuple[str, ...]]] = []
    for spec in list_specs() if specs is None else specs:
        cells = _support_cells(spec)
        if rows and rows[-1][1] == cells:
            rows[-1][0].append(spec.name)
        else:
            rows.append(([spec.name], cells))
    lines = ["| " + " | ".join(SUPPORT_HEADERS) + " |", "|" + " --- |" * len(SUPPORT_HEADERS)]
    lines += ["| " + ", ".join(f"`{n}`" for n in names) + " | " + " | ".join(cells) + " |" for names, cells in rows]
    return "\n".join(lines)


SUPPORT = f"""
### What each model supports

{support_table()}

A guidance-distilled model (Stable Audio 3 Medium and its `tiny-sa3` twin) has guidance built
into its weights: there is no classifier-free guidance to vary and so no negative prompt, and recap
refuses both instead of ignoring them. On such a model the wording is the only lever.
"""


def server_text(ctx: AppContext) -> str:
    """What this server runs: loaded models (real or random weights), device, storage, versions."""
    lines = ["### This server"]
    loaded = ctx.loaded()
    if loaded:
        for m in loaded:
            weights = ("**random weights (audio is noise)**" if m["random_weights"] else
                       "trained here on synthetic sounds (a toy)" if get_spec(m["name"]).trained_here else "real weights")
            lines.append(f"- {code_text(m['name'])} — {weights}, {m['family']}, {m['sample_rate']:,} Hz, "
                         f"{m['channels']} channel(s), up to {m['max_seconds']:.1f} s, on {m['device']} ({m['dtype']})")
    else:
        lines.append(f"- No model loaded yet; {code_text(ctx.start_model)} loads on first use.")
    for name, why in ctx.failures().items():
        lines.append(f"- {code_text(name)} could not be loaded: {md_text(why)}")
    device = ctx.settings.device or "automatic (CUDA, then Apple MPS, then CPU)"
    lines.append(f"- Device setting: {md_text(device)}" + (" · ZeroGPU" if zero_gpu() else ""))
    llm = "configured" if ctx.settings.llm_configured else "not configured (synonym rewording works offline)"
    lines.append(f"- LLM endpoint: {llm}")
    lines.append(f"- Data folder: {code_text(ctx.home)} (runs and saved tokens are shared by everyone using this server)")
    lines.append(f"- Listening studies: {STUDY_ACCESS[ctx.settings.experimenter_access]}")
    lines.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    return "\n".join(lines)


def build_about_tab(ctx: AppContext, tab: gr.Tab) -> None:
    """Adds the tab's components; what the server runs is read again whenever the tab opens."""
    gr.Markdown(METHOD)
    gr.Markdown(SUPPORT)
    info = gr.Markdown(server_text(ctx))
    tab.select(lambda: server_text(ctx), None, info, api_name="about")
