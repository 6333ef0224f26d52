"""Errors of the link emulator. Messages say what went wrong and how to fix it.

Exception tree::

    LinkError                 unknown link profile, emulator that cannot listen, netns not possible
"""

from __future__ import annotations


class LinkError(Exception):
    """The emulated edge–cloud link cannot be set up as asked."""
