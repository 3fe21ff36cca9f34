"""Text-to-audio model backends.

- :mod:`recap.backends.registry`: every model recap knows (light: no torch, no diffusers).
- :mod:`recap.backends.loading`: ``load_backend`` and device / dtype choice.
- :mod:`recap.backends.base`: the :class:`~recap.backends.base.AudioBackend` interface;
  :mod:`~recap.backends.stable_audio` and :mod:`~recap.backends.audioldm` implement a family each.

Nothing is imported here, so that ``import recap.backends.registry`` stays cheap.
"""
