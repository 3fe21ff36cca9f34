"""The model registry: one list of models, light to import, and true to what the loaded models report."""

from __future__ import annotations

import inspect
import math
import re
import subprocess
import sys

import pytest

from recap.backends.registry import get_spec, toy_weights_present

_MODULES = "import sys; import {module}; print(*(m in sys.modules for m in ('diffusers', 'transformers', 'torch')))"


def _heavy_imports(module: str) -> tuple[bool, bool, bool]:
    """(diffusers, transformers, torch) imported after ``import module`` in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", _MODULES.format(module=module)], capture_output=True, text=True,
                          timeout=120, check=True)
    return tuple(word == "True" for word in proc.stdout.split())


def test_the_registry_imports_without_the_model_libraries():
    assert _heavy_imports("recap.backends.registry") == (False, False, False)


def test_the_web_app_starts_without_the_model_libraries():
    # torch alone takes about two seconds to import: it comes with the first model
    assert _heavy_imports("recap.ui.app") == (False, False, False)


@pytest.mark.parametrize("name", ["tiny", "tiny-audioldm", "toy", "tiny-sa3"])
def test_the_registry_says_what_the_loaded_model_reports(name):
    from recap.backends.loading import load_backend

    if name == "toy" and not toy_weights_present():
        pytest.skip("the toy model's weights are not in this checkout")
    spec = get_spec(name)
    backend = load_backend(name, device="cpu")
    assert spec.max_seconds == pytest.approx(backend.max_seconds, abs=1e-9)
    assert spec.defaults == backend.defaults
    assert (spec.family, spec.random_weights) == (backend.family, backend.random_weights)
    assert spec.sample_rate == backend.sample_rate


def test_the_real_models_windows_are_their_own():
    from diffusers import AutoencoderOobleck, StableAudioDiTModel

    # diffusers' defaults of both classes are Stable Audio Open 1.0's config (1024 latent frames,
    # hop 2*4*4*8*8 at 44.1 kHz): its model_config.json says sample_size 2097152 at 44100 Hz.
    vae = inspect.signature(AutoencoderOobleck.__init__).parameters
    frames = inspect.signature(StableAudioDiTModel.__init__).parameters["sample_size"].default
    hop = math.prod(vae["downsampling_ratios"].default)
    assert frames * hop == 2_097_152
    sao = get_spec("sao")
    assert sao.max_seconds == pytest.approx(frames * hop / vae["sampling_rate"].default)
    assert sao.max_seconds == pytest.approx(47.55, abs=0.005)
    # AudioLDM trains on 10.24 s (1024 mel frames at hop 160, 16 kHz); recap allows three of them.
    for name in ("audioldm", "cvssp/audioldm-l-full", "cvssp/audioldm-x-custom"):
        assert get_spec(name).max_seconds == pytest.approx(3 * 1024 * 160 / 16_000) == pytest.approx(30.72)


@pytest.mark.parametrize("name", ["no-such-model", "cvssp/audioldm<b>", "../assets/toy"])
def test_an_unknown_name_is_refused_by_name(name):
    with pytest.raises(ValueError, match=re.escape(f"unknown model {name!r}")):
        get_spec(name)
