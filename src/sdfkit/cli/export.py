"""`sdf` commands of the export stage (registered on the shared app)."""

from __future__ import annotations
