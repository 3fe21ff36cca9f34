"""recap's web app, and the entry point of its Hugging Face Space: ``python app.py``.

The app is built in ``recap/ui/``; see ``recap.ui.app``.
"""

from recap.ui.app import main

if __name__ == "__main__":
    main()
