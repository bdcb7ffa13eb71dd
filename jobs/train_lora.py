"""DreamBooth + LoRA fine-tuning of Stable Diffusion on labelled skin-lesion images (the study's Table II).

    python jobs/train_lora.py --model derm-t2im --data isic-512/ --output adapters/isic
    python jobs/train_lora.py ... --resume                       # continue from the latest checkpoint
    ray job submit --working-dir . -- python jobs/train_lora.py ... --num-workers 4
    python jobs/train_lora.py merge --model derm-t2im --lora adapters/isic:0.8 --output merged.safetensors

The `ray job submit` entry point of `dermgen train-lora` (and, with `merge` first, `dermgen merge-lora`);
every option of those commands works here. Writes <output>/pytorch_lora_weights.safetensors and
<output>/lora_card.json; use the adapter with `dermgen generate --lora <output>/...safetensors:SCALE`.
See docs/FINETUNING.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from dermgen.cli import main  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["merge"]:
        sys.exit(main(["merge-lora", *argv[1:]]))
    sys.exit(main(["train-lora", *argv]))
