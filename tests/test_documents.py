"""Tables for papers: the same blocks as Markdown and LaTeX, every cell escaped."""

from __future__ import annotations

from recap.analysis.documents import Heading, Table, latex, latex_escape, markdown


def test_latex_escapes_what_prompts_and_headings_hold():
    assert latex_escape("50% rain & wind_#1 {x} ~ ^ \\") == (
        r"50\% rain \& wind\_\#1 \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{}")
    assert latex_escape("cosine (↓) · ρ −0.2 `code` <my-bell>") == (
        r"cosine ($\downarrow$) $\cdot$ $\rho$ --0.2 code \textless{}my-bell\textgreater{}")


def test_markdown_and_latex_render_the_same_table():
    blocks = [Heading("Run x", 1), "A note.", Heading("Tier table"),
              Table(["metric", "mean"], [["clip latent cosine", "0.93"], ["text & cosine", "0.5"]], "Tier table")]
    md, tex = markdown(blocks), latex(blocks, "title")
    assert "# Run x" in md and "| metric | mean |\n|---|---|\n| clip latent cosine | 0.93 |" in md
    assert "\\section*{Run x}" in tex and "\\caption{Tier table}" in tex
    assert "metric & mean \\\\\n\\midrule\nclip latent cosine & 0.93 \\\\\ntext \\& cosine & 0.5 \\\\\n\\bottomrule" in tex
    assert tex.count("\\begin{tabular}{ll}") == 1
