"""edgecloud-qa: app layer."""
