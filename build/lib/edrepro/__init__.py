"""edrepro: energy discrepancy, reproduced.

Three layers, one folder each:

- ``edrepro`` itself holds the science a student reads and edits: the losses (:mod:`edrepro.losses`),
  samplers, networks, toy data, metrics, the mixture of Figure 1, the MNIST readers and plotting.
  It imports nothing from the two layers below.
- ``edrepro.chapters`` holds each chapter's experiment: which runs a page trains, how one run
  trains and how it is evaluated (density estimation, ablations, the benchmark, discrete ED,
  ED-LEBM on MNIST, w-stabilisation, speed).
- ``edrepro.book`` holds the machinery that trains, caches, renders and checks: the training loop,
  the run cache, stored results, notebook parameters, page helpers, claims and the command line.
  Chapters use it; it finds a chapter's code only by name, through its registries.
"""

__version__ = "0.2.0"
