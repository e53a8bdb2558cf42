"""The package's version, written in this one place.

The build (``[tool.hatch.version]`` in ``pyproject.toml``) reads it into the
distribution's metadata, and everything that shows a version — ``mahavishnu_dlq.__version__``,
``mahavishnu-dlq --version``, the web console, the OpenAPI document, the failure context
stored with each task — imports it from here. Change it here only, with an entry in
``CHANGELOG.md``.
"""

from __future__ import annotations

__version__ = "0.1.0"
