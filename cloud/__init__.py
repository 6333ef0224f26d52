"""edgecloud-qa: cloud layer."""
