"""edgecloud-qa: pipelines layer."""
