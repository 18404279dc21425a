"""sdfkit: build, audit and export Synthetic Document Finetuning corpora.

The library is importable from a notebook; the ``sdf`` command is a thin shell over it.
Heavy dependencies (torch, spaCy, sentence-transformers, tinker, anthropic) are imported
inside the functions that need them, so importing sdfkit stays fast.
"""

from sdfkit.store.catalog import Store, doc_id_for

__version__ = "0.1.0"
__all__ = ["Store", "doc_id_for", "__version__"]
