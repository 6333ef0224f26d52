"""The front door of the link emulator for app/ and eval/: the profiles, and a profile by name
(:func:`get_profile` raises LinkError for an unknown one, listing the known ones)."""

from __future__ import annotations

from netem.link import PROFILES, LinkProfile, get_profile

__all__ = ["PROFILES", "LinkProfile", "get_profile"]
