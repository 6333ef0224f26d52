"""edgecloud-qa: indexing layer."""
