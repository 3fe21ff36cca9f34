"""recap: a workbench for studying how wording steers text-to-audio diffusion models."""

__version__ = "0.1.0"
