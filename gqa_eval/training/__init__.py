"""Training stage: train the bundled tiny checkpoints, or uptrain a converted one (``gqa-eval-train``).

==================  ======================================================================
``loop.py``         the trainer: config, resume, optimiser, logging, saving (``conf/training.yaml``)
``data.py``         the synthetic training mixture, read and tokenized as evaluation reads it
``model.py``        build a model from a recipe; T5 on the grouped attention's training kernel;
                    steps run as the mean-pooled conversion (``pool_kv``)
==================  ======================================================================
"""
