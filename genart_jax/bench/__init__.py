"""`genart bench`: the train-step timing harness (`harness`), its interleaved timer
(`interleave`) and the PyTorch eager peers (`peers`). Shipped in the package so that `genart
bench` runs from any install; the measurement scripts and their results stay in the repository's
`benchmarks/`."""
