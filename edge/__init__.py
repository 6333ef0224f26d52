"""edgecloud-qa: edge layer."""
