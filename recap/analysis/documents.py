"""Tables for papers: one document of headings, paragraphs and tables, written as Markdown and LaTeX.

A report builds its blocks once; :func:`markdown` and :func:`latex` render the same blocks, so the
numbers in ``summary.md`` and ``summary.tex`` cannot drift apart. The LaTeX uses ``booktabs``
rules and escapes every cell (recap's cells hold prompts, which may contain ``&``, ``%`` or ``_``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    caption: str = ""


Block = Heading | Table | str  # a str is a paragraph


def markdown(blocks: Sequence[Block]) -> str:
    """The document as Markdown (GitHub tables)."""
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            lines += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Table):
            lines += ["| " + " | ".join(b.headers) + " |", "|" + "|".join("---" for _ in b.headers) + "|"]
            lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in b.rows] + [""]
        else:
            lines += [b, ""]
    return "\n".join(lines).rstrip() + "\n"


# Characters LaTeX reads as commands, and the symbols recap's headings use, in text mode.
_LATEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "↓": r"$\downarrow$", "↑": r"$\uparrow$",
    "ρ": r"$\rho$", "÷": r"$\div$", "−": "--", "–": "--", "—": "---", "×": r"$\times$", "·": r"$\cdot$",
    "≥": r"$\geq$", "≤": r"$\leq$", "…": r"\ldots{}", "`": "", "<": r"\textless{}", ">": r"\textgreater{}",
}


def latex_escape(text: str) -> str:
    """``text`` safe in LaTeX text mode (Markdown code ticks dropped)."""
    return "".join(_LATEX.get(c, c) for c in str(text))


def latex(blocks: Sequence[Block], title: str = "") -> str:
    """The document as a LaTeX fragment to ``\\input`` (needs ``\\usepackage{booktabs}``)."""
    out = [f"% {title}" if title else "% written by recap", "% needs \\usepackage{booktabs}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            out += [("\\section*{" if b.level <= 1 else "\\subsection*{") + latex_escape(b.text) + "}", ""]
        elif isinstance(b, Table):
            out += ["\\begin{table}[ht]", "\\centering", "\\small"]
            if b.caption:
                out.append("\\caption{" + latex_escape(b.caption) + "}")
            out += ["\\begin{tabular}{" + "l" * len(b.headers) + "}", "\\toprule",
                    " & ".join(latex_escape(h) for h in b.headers) + r" \\", "\\midrule"]
            out += [" & ".join(latex_escape(c) for c in r) + r" \\" for r in b.rows]
            out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
        else:
            out += [latex_escape(b), ""]
    return "\n".join(out).rstrip() + "\n"
