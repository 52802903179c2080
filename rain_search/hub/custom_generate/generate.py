"""RAIN for ``model.generate(custom_generate=<this folder>, trust_remote_code=True)``.

``transformers`` loads this file by path and calls its ``generate``; the
implementation lives in the installed ``rain_search`` package.
"""

from rain_search.decoding import rain_generate as generate

__all__ = ["generate"]
