"""recap's one error root and its few kinds.

Every failure recap expects (bad input, a model that cannot load, a stopped job, a service that
failed) is a :class:`RecapError` whose message is a sentence meant for the user; each interface
(the CLI, the web app) turns it into what it shows in one place. Anything else is a bug and is
logged with its traceback, never shown.
"""

from __future__ import annotations


class RecapError(Exception):
    """An expected failure; ``str(exc)`` is the sentence to show."""


class BadInput(RecapError, ValueError):
    """A value from a user, a file or an API that cannot be used; the message names it."""


class ModelUnavailable(RecapError, RuntimeError):
    """The model cannot be loaded here; the message says why and what to do."""


class Cancelled(RecapError, RuntimeError):
    """A long job was stopped by the user."""


class ServiceError(RecapError, RuntimeError):
    """An outside service (an LLM endpoint, the Hub, WordNet) failed; the message says how."""
