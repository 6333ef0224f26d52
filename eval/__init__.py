"""edgecloud-qa: eval layer."""
