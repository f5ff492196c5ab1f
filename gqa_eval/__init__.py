"""gqa-eval: what converting an MHA checkpoint to grouped-query attention costs in quality and buys in speed.

Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models from Multi-Head
Checkpoints", arXiv 2305.13245.
"""

__version__ = "0.1.0"
