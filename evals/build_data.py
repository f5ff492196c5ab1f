"""Regenerate the bundled evaluation sets under evals/data (deterministic; see gqa_eval.synthetic).

    python evals/build_data.py                          # the validation sets, as committed
    python evals/build_data.py --splits test --n 200 --out regen

Options: ``--out`` (default ``evals/data``), ``--n``, ``--splits``, ``--tasks``, ``--seed``.
"""

from gqa_eval.synthetic import main

raise SystemExit(main())
