"""The chapters' experiments: what each page trains and evaluates (built on the science in
:mod:`edrepro` and the machinery in :mod:`edrepro.book`)."""
