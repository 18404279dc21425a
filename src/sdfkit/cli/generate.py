"""`sdf` commands of the generate stage (registered on the shared app)."""

from __future__ import annotations
