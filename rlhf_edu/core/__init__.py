"""The ground floor: what every chapter stands on, and nothing that a chapter teaches.

world → datasets (``preferences``) → rollouts / logprobs / training → chapter modules → notebooks.
No module here imports a chapter module (``tests/test_layers.py`` checks it).
"""
