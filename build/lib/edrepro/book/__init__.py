"""The machinery of the book: the training loop, the run cache, stored results, notebook
parameters, page helpers, claims and the command line (``python -m edrepro``)."""
