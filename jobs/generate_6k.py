"""Generate the Derm-T2IM 6k dataset (3,000 benign + 3,000 malignant kept images).

    python jobs/generate_6k.py                                   # local Ray, output under ./outputs/
    ray job submit --working-dir . -- python jobs/generate_6k.py --output s3://bucket/derm-6k
    python jobs/generate_6k.py --model tiny --limit 16 --size 64 --filter none --output /tmp/smoke

A thin wrapper over `dermgen generate`; every option of that command works here.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from dermgen.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
