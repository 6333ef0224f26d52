"""The front door of the link emulator for app/ and eval/: the profiles, and checking a profile name."""

from __future__ import annotations

from netem.link import PROFILES, LinkProfile, get_profile

__all__ = ["PROFILES", "LinkProfile", "check_network", "get_profile"]


def check_network(name: str) -> LinkProfile:
    """The link profile called ``name``.

    :raises LinkError: an unknown profile (the message lists the known ones).
    """
    return get_profile(name)
