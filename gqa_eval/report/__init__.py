"""Report stage: every ``result.json`` under a folder -> ``summary.csv``, the Table-1 pivot and the plots.

==================  ======================================================================
``summary.py``      collect runs, write the report files atomically (``gqa-eval-summary``)
``table.py``        the pivot: one row per variant and like settings, text and CSV forms
``plots.py``        quality vs time per sample (Fig. 3), time and KV bytes vs K/V heads (Fig. 6)
``callback.py``     the Hydra callback that writes the sweep's report when a multirun ends
==================  ======================================================================
"""
