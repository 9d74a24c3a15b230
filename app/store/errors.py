"""The errors of a lookup that finds no model to serve; the API maps each to its HTTP status
(``app.api.errors``)."""

from __future__ import annotations


class StoreError(Exception):
    """A request names no model the store can serve."""


class ModelNotFoundError(StoreError):
    """No checkpoint of the models folder has this id."""


class ModelUnavailableError(StoreError):
    """The checkpoint exists but failed to load."""


class NoModelError(StoreError):
    """The request names no model and none is loaded."""


class ModelRequiredError(StoreError):
    """The request names no model and several could serve it, none of them the default."""
