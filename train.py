"""Train / validate / test with Lightning: ``python train.py fit --config configs/<job>.yaml``.

Jobs (see the README): supernet (``configs/supernet/``), accuracy predictor
(``configs/predictor/``) and quantization-aware fine-tuning (``configs/finetune.yaml``). Each job
writes under its run folder (``runs/<job>/<timestamp>/``); ``python -m cimnas.promote`` copies a
trained file over a shipped default. ``--debug`` shows tracebacks of user errors.
"""

import sys

from cimnas.cli import main

if __name__ == "__main__":
    sys.exit(main())
