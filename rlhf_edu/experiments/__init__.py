"""The third floor: what uses every chapter, with the ``rlhf-edu`` command on top.

The recipes that rebuild the zoo and the shipped sweeps (``recipes``, ``sweeps/*.json``), the end-to-end pipelines
(``pipeline``), the bridge to TRL (``graduate``), the book's diagrams (``figures``), the claims harness (``claims``),
a reader's copy of the notebooks and diagrams (``notebook_copy``) and the CLI (``cli``). Nothing below this floor
imports it.
"""
