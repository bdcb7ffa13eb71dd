"""DreamBooth + LoRA fine-tuning of Stable Diffusion on labelled skin-lesion images (the study's Table II).

    python jobs/train_lora.py --model derm-t2im --data isic-512/ --output adapters/isic
    python jobs/train_lora.py --model tiny --data /work/shared/data/derm-t2im-samples --output /tmp/lora \
        --resolution 64 --max-steps 200
    python jobs/train_lora.py ... --resume                       # continue from the latest checkpoint
    ray job submit --working-dir . -- python jobs/train_lora.py ... --num-workers 4
    python jobs/train_lora.py merge --model derm-t2im --lora adapters/isic:0.8 --output merged.safetensors

Writes <output>/pytorch_lora_weights.safetensors and <output>/lora_card.json; use the adapter with
`dermgen generate --lora <output>/pytorch_lora_weights.safetensors:SCALE`. See docs/FINETUNING.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from dermgen.train.lora import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
