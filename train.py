"""Train / validate / test with Lightning: ``python train.py fit --config configs/<job>.yaml``.

Jobs (see the README): supernet (``configs/supernet/``), accuracy predictor
(``configs/predictor/``) and quantization-aware fine-tuning (``configs/finetune.yaml``).
"""

from cimnas.cli import train_cli

if __name__ == "__main__":
    train_cli()
