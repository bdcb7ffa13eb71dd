"""Optional CLIP image-text similarity, only from a local transformers CLIP model (never downloaded)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from dermgen.errors import ConfigError, missing_dependency
from dermgen.filters.base import ImageView, Scorer

__all__ = ["DEFAULT_CLIP_PROMPT", "ClipScorer"]

log = logging.getLogger(__name__)

DEFAULT_CLIP_PROMPT = "a dermoscopic close-up photo of a skin lesion"


class ClipScorer(Scorer):
    """Cosine similarity (-1..1, in practice 0..0.4) between the CLIP embeddings of the image and a prompt.

    ``model_path`` must be a local directory holding a transformers CLIP model (``config.json`` and
    weights); it is loaded with ``local_files_only=True`` so nothing is ever downloaded. torch and
    transformers are imported only here. Runs on CPU, one image at a time (slow: an optional check).
    """

    names = ("clip",)

    def __init__(self, model_path: str | os.PathLike[str], prompt: str = DEFAULT_CLIP_PROMPT) -> None:
        path = Path(model_path)
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise ConfigError(
                f"clip_model {str(model_path)!r} is not a local transformers CLIP model directory "
                "(expected a folder with config.json); CLIP models are never downloaded"
            )
        try:
            import torch
            from transformers import CLIPModel, CLIPProcessor
        except ImportError as exc:  # pragma: no cover - torch and transformers are core dependencies
            raise missing_dependency("transformers") from exc
        self._torch = torch
        self.model = CLIPModel.from_pretrained(str(path), local_files_only=True).eval()
        self.processor = CLIPProcessor.from_pretrained(str(path), local_files_only=True)
        self.prompt = prompt
        with torch.no_grad():
            text = self.processor(text=[prompt], return_tensors="pt", padding=True)
            emb = self.model.get_text_features(**text)
        self.text_embedding = torch.nn.functional.normalize(emb, dim=-1)
        log.info("clip: loaded %s", path)

    def compute(self, view: ImageView) -> dict[str, float]:
        torch = self._torch
        with torch.no_grad():
            pixels = self.processor(images=[np.asarray(view.rgb)], return_tensors="pt")
            emb = torch.nn.functional.normalize(self.model.get_image_features(**pixels), dim=-1)
        return {"clip": float((emb @ self.text_embedding.T).item())}
