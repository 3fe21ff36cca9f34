"""Finding and opening WordNet 3.0 without a download, for the offline synonym rewriter.

Where WordNet comes from (first found wins):

1. an explicit ``root`` folder holding the WordNet 3.0 database files;
2. nltk's own copy (``nltk.download("wordnet")``), found through ``nltk.data.find``;
3. Debian's ``wordnet-base`` package in ``/usr/share/wordnet``. That package leaves out the
   small ``lexnames`` file nltk's reader needs, so recap ships it (``assets/wordnet/lexnames``,
   transcribed from the package's man page ``lexnames(5WN)``) and the reader takes it from
   there; the database files are read in place (nothing is copied or written). nltk only opens
   files under the folders in ``nltk.data.path``, so that one folder is added to it.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recap.errors import ServiceError

if TYPE_CHECKING:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

logger = logging.getLogger(__name__)

DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")
LEXNAMES_ASSET = Path(__file__).resolve().parents[2] / "assets" / "wordnet" / "lexnames"
INSTALL_HINT = (
    "install WordNet with `apt-get install wordnet-base` (Debian/Ubuntu) or, with internet, "
    "in Python: `import nltk; nltk.download('wordnet')`"
)

# nltk's reader shares open file handles between lookups (it seeks in them), so lookups from
# several threads (a web app's queue) are serialised.
WORDNET_LOCK = threading.RLock()


class WordNetMissingError(ServiceError):
    """WordNet could not be found; the message says what to install."""


def _reader_class() -> type:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _Reader(WordNetCorpusReader):  # type: ignore[misc,valid-type]
        """nltk's reader with an optional outside ``lexnames`` file and no OMW mapping.

        The OMW mapping (``map_wn``) wants ``index.sense`` of a downloaded copy, which Debian's
        package does not have; recap uses English only, so it is skipped.
        """

        def __init__(self, root: Any, lexnames: Path | None) -> None:
            self._recap_lexnames = lexnames
            with warnings.catch_warnings():
                # "multilingual functions are not available": expected, recap needs English only
                warnings.simplefilter("ignore")
                super().__init__(root, None)

        def open(self, file: str) -> Any:
            if file == "lexnames" and self._recap_lexnames is not None:
                return io.StringIO(self._recap_lexnames.read_text(encoding="utf-8"))
            return super().open(file)

        def map_wn(self, version: str = "wordnet") -> None:
            return None

    return _Reader


def _has_database(root: Path) -> bool:
    return all(
        (root / f"{kind}.{pos}").is_file() for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")
    )


def _allow_in_nltk_sandbox(root: Path) -> None:
    # nltk only opens files under the folders in nltk.data.path; adding the folder being read
    # (never a parent) keeps that sandbox as narrow as it can be.
    import nltk

    resolved = str(root.resolve())
    if resolved not in [str(p) for p in nltk.data.path]:
        nltk.data.path.append(resolved)


def load_wordnet(root: str | Path | None = None) -> WordNetCorpusReader:
    """Finds and opens WordNet 3.0 (see the module docstring for the search order).

    Loading reads the index files into memory (about 1-2 s); the reader is cached per folder.

    Args:
        root: Folder with the database files (``data.noun``, ``index.noun``, ...). ``lexnames``
            is taken from recap's assets when the folder has none.

    Returns:
        An nltk ``WordNetCorpusReader``.

    Raises:
        WordNetMissingError: when no WordNet is found; the message says what to install.
    """
    import nltk

    if root is not None:
        folder = Path(root).expanduser()
        if not _has_database(folder):
            raise WordNetMissingError(f"no WordNet database in {folder}; {INSTALL_HINT}")
        return _open_cached(str(folder.resolve()), "folder")
    for name in ("corpora/wordnet", "corpora/wordnet.zip/wordnet/"):
        try:
            nltk.data.find(name)
        except LookupError:
            continue
        return _open_cached(name, "nltk")
    if _has_database(DEBIAN_WORDNET_DIR):
        return _open_cached(str(DEBIAN_WORDNET_DIR.resolve()), "folder")
    raise WordNetMissingError(f"WordNet was not found; {INSTALL_HINT}")


@functools.lru_cache(maxsize=4)
def _open_cached(location: str, kind: str) -> Any:
    """Opens WordNet at a resolved folder (``kind="folder"``) or an nltk resource name."""
    reader_cls = _reader_class()
    if kind == "nltk":
        import nltk

        pointer = nltk.data.find(location)  # a folder or a zip member; nltk opens either
        logger.info("using nltk's WordNet at %s", pointer)
        return reader_cls(pointer, None)
    folder = Path(location)
    lexnames = None if (folder / "lexnames").is_file() else LEXNAMES_ASSET
    if lexnames is not None and not lexnames.is_file():
        raise WordNetMissingError(f"{folder} has no 'lexnames' and recap's copy {lexnames} is missing")
    _allow_in_nltk_sandbox(folder)
    logger.info("using WordNet at %s (lexnames from %s)", folder, lexnames or folder)
    return reader_cls(location, lexnames)


def wordnet_available() -> bool:
    """True when WordNet can be opened (this opens and caches it: about 1-2 s the first time)."""
    try:
        load_wordnet()
    except WordNetMissingError:
        return False
    return True
