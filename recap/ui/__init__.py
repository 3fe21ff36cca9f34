"""The Gradio web app: one module per tab; thin — converts values, calls the core, shows results.

Only this package imports gradio. Build the app with ``recap.ui.app.build_app``.
"""
