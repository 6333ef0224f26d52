"""The edge–cloud link emulator: a TCP proxy that adds delay and limits the rate with a token bucket,
echo and sink servers to measure it, and network namespaces shaped by ``tc tbf``. Imports nothing of
the project: the cascade, the evaluation and the CLI use it; it uses none of them."""
