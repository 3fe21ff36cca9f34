"""Settings read from the environment, in one place, lazily (never at import time)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL = "stabilityai/stable-audio-open-1.0"
# What runs when the default model's weights are not available (no token, no network).
OFFLINE_MODEL = "tiny"


@dataclass(frozen=True)
class Settings:
    """Process-wide settings.

    Attributes:
        home: Root of everything recap writes (runs/, tokens/, study.sqlite).
        model: Backend name used when none is given.
        device: Torch device override ("cuda", "cuda:1", "mps", "cpu") or None for automatic.
        dtype: Torch dtype override ("float16", "bfloat16", "float32") or None for automatic.
        compile: ``torch.compile`` the denoiser: "default", "reduce-overhead" (CUDA graphs) or
            "max-autotune-no-cudagraphs"; None leaves it eager (compiling takes a minute and pays on GPUs).
        llm_base_url: OpenAI-compatible endpoint for recaptioning; None means api.openai.com when a key is set.
        llm_model: Chat model name for recaptioning.
        openai_api_key: Secret. Never printed, logged, stored or sent to a browser (repr hides it),
            and only ever sent to ``llm_base_url`` (the owner's endpoint), never to one a visitor typed.
        public: The server can be reached from outside (a Hugging Face Space, or bound to an
            address other than loopback): then experimenter functions need a credential and
            visitor-typed LLM endpoints are off unless the owner turns them on.
        experimenter_password: Secret that unlocks the experimenter role (``RECAP_EXPERIMENTER_PASSWORD``).
        visitor_endpoints: Visitors may type their own LLM endpoint (always with their own key).
            Off by default on a public server, where the server could be made to reach internal hosts.
        zero_gpu: "spaces" on a ZeroGPU Space, "emulate" to behave as one on any machine (each
            GPU call in a forked child: tests), None elsewhere. See :func:`zero_gpu_mode`.
    """

    home: Path
    model: str = DEFAULT_MODEL
    device: str | None = None
    dtype: str | None = None
    compile: str | None = None
    llm_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    openai_api_key: str | None = field(default=None, repr=False)
    public: bool = False
    experimenter_password: str | None = field(default=None, repr=False)
    visitor_endpoints: bool = True
    zero_gpu: str | None = None

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def tokens_dir(self) -> Path:
        return self.home / "tokens"

    @property
    def study_db(self) -> Path:
        return self.home / "study.sqlite"

    @property
    def llm_configured(self) -> bool:
        return bool(self.openai_api_key or self.llm_base_url)

    @property
    def experimenter_access(self) -> str:
        """How the experimenter role is reached: "open" (a local server without a password: anyone
        at this machine), "password" (``RECAP_EXPERIMENTER_PASSWORD`` is set) or "off" (a public
        server without a credential: experimenter functions are off)."""
        if self.experimenter_password:
            return "password"
        return "off" if self.public else "open"


def _default_home() -> Path:
    # A Hugging Face Space with persistent storage mounts it at /data; keep results there so they
    # survive restarts. Everywhere else, a folder beside where recap is started.
    data = Path("/data")
    if data.is_dir() and os.access(data, os.W_OK):
        return data / "recap"
    return Path("recap_data")


_LOOPBACK = {"", "127.0.0.1", "localhost", "::1"}


def _flag(value: str | None, default: bool) -> bool:
    if value is None or not value.strip():
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def server_is_public(env: dict[str, str] | os._Environ) -> bool:
    """Whether the web server can be reached from other machines: on a Hugging Face Space
    (``SPACE_ID`` is set there), when bound to an address other than loopback
    (``GRADIO_SERVER_NAME``), or when the owner says so (``RECAP_PUBLIC=1``)."""
    if env.get("SPACE_ID") or _flag(env.get("RECAP_PUBLIC"), False):
        return True
    return (env.get("GRADIO_SERVER_NAME") or "").strip() not in _LOOPBACK


def zero_gpu_mode(env: dict[str, str] | os._Environ | None = None) -> str | None:
    """"spaces" on a ZeroGPU Space (``SPACES_ZERO_GPU`` is "1", "t" or "true", read as the ``spaces``
    package reads it: every Space has that package, so its being importable says nothing),
    "emulate" when ``RECAP_EMULATE_ZERO_GPU`` is on, else None."""
    env = os.environ if env is None else env
    if (env.get("SPACES_ZERO_GPU") or "").strip().lower() in {"1", "t", "true"}:
        return "spaces"
    return "emulate" if _flag(env.get("RECAP_EMULATE_ZERO_GPU"), False) else None


def settings() -> Settings:
    """Reads the environment now and returns the settings (cheap; call it where needed)."""
    env = os.environ
    home = Path(env["RECAP_HOME"]) if env.get("RECAP_HOME") else _default_home()
    return Settings(
        home=home.expanduser(),
        model=env.get("RECAP_MODEL") or DEFAULT_MODEL,
        device=env.get("RECAP_DEVICE") or None,
        dtype=env.get("RECAP_DTYPE") or None,
        compile=env.get("RECAP_COMPILE") or None,
        llm_base_url=env.get("OPENAI_BASE_URL") or None,
        llm_model=env.get("RECAP_LLM_MODEL") or "gpt-4o-mini",
        openai_api_key=env.get("OPENAI_API_KEY") or None,
        public=(public := server_is_public(env)),
        experimenter_password=env.get("RECAP_EXPERIMENTER_PASSWORD") or None,
        visitor_endpoints=_flag(env.get("RECAP_VISITOR_ENDPOINTS"), not public),
        zero_gpu=zero_gpu_mode(env),
    )
