"""Validate a generated run the way the Derm-T2IM study did (Table IV): baseline vs hybrid classifiers.

    python jobs/validate_classifier.py --real data/isic_train --synthetic s3://bucket/derm-6k \\
        --test data/isic_test --test data/ham10000 --model vit_b_16 --weights /models/vit-in21k \\
        --epochs 10 --output outputs/validate-vit
    ray job submit --working-dir . -- python jobs/validate_classifier.py ... --num-workers 4

The `ray job submit` entry point of `dermgen validate`; every option of that command works here. Writes
<output>/metrics.json (per mode and test set: accuracy, balanced accuracy, AUROC, sensitivity,
specificity, confusion matrix), <output>/table.md and <output>/curves.png.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from dermgen.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["validate", *sys.argv[1:]]))
