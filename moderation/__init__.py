"""NCII-first moderation service: hash banks, nudity classifier, review queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from flask import Flask


def create_app(*args: Any, **kwargs: Any) -> Flask:
    """The review console and JSON API (see moderation.web.create_app)."""
    from moderation.web import create_app as _create_app

    return _create_app(*args, **kwargs)
