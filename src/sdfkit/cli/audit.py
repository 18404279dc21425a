"""`sdf` commands of the audit stage (registered on the shared app)."""

from __future__ import annotations
