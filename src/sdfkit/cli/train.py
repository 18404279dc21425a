"""`sdf` commands of the train stage (registered on the shared app)."""

from __future__ import annotations
