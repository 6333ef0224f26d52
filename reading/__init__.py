"""How a model reads a passage, and the verified model files it reads with (imports nothing of the project)."""
