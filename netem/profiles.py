"""The link profiles: the round-trip time and bandwidth of each named edge–cloud link."""

from __future__ import annotations

from dataclasses import dataclass

from netem.errors import LinkError

_MIN_BUCKET_BYTES = 16 * 1024
_BUCKET_S = 0.001


@dataclass(frozen=True)
class LinkProfile:
    """A symmetric link: round-trip time and bandwidth, the same in both directions."""

    name: str
    rtt_ms: float
    bandwidth_mbit: float

    def __post_init__(self) -> None:
        if not self.rtt_ms >= 0 or not self.bandwidth_mbit > 0:
            raise LinkError(f"link profile {self.name!r} has rtt_ms={self.rtt_ms}, bandwidth_mbit="
                            f"{self.bandwidth_mbit} — give an RTT >= 0 and a bandwidth > 0")

    @property
    def one_way_delay_s(self) -> float:
        """Delay added to each direction, in seconds (half the RTT)."""
        return self.rtt_ms / 2000.0

    @property
    def bytes_per_s(self) -> float:
        """Bandwidth in bytes per second (1 Mbit = 10⁶ bits)."""
        return self.bandwidth_mbit * 1e6 / 8.0

    @property
    def bucket_bytes(self) -> int:
        """Token-bucket size: 1 ms worth of bytes, at least 16 KiB.

        Small, so a transfer is shaped from its first millisecond instead of bursting at
        loopback speed after an idle spell. At least 16 KiB so that each wake-up of a
        forwarding thread moves a useful amount (1 ms at 10 Mbit/s is only 1.25 kB).
        """
        return max(_MIN_BUCKET_BYTES, int(self.bytes_per_s * _BUCKET_S))


# `lan` is an office network: 2 ms RTT, 1 Gbit/s. (At 1 ms the proxy's own ~0.1 ms forwarding cost
# was 10% of the target and measurements under load left the 20% band.) The others are the cascade issue's.
PROFILES: dict[str, LinkProfile] = {
    p.name: p
    for p in (
        LinkProfile("lan", rtt_ms=2.0, bandwidth_mbit=1000.0),
        LinkProfile("5g", rtt_ms=10.0, bandwidth_mbit=100.0),
        LinkProfile("wifi", rtt_ms=30.0, bandwidth_mbit=50.0),
        LinkProfile("congested", rtt_ms=50.0, bandwidth_mbit=10.0),
    )
}


def get_profile(name: str) -> LinkProfile:
    """Look a profile up by name.

    :raises LinkError: no profile of that name.
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise LinkError(f"unknown link profile {name!r} — choose one of: {', '.join(PROFILES)}") from None


def select_profiles(name: str) -> list[LinkProfile]:
    """Every profile for ``"all"``, else the one named.

    :raises LinkError: unknown name.
    """
    return list(PROFILES.values()) if name == "all" else [get_profile(name)]


__all__ = [
    "PROFILES",
    "LinkProfile",
    "get_profile",
    "select_profiles",
]
