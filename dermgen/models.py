"""Which weights a model argument names, and loading them: presets (`tiny`, `derm-t2im`), diffusers folders,
SD 1.x single files, s3:// objects; the model's identity and fingerprint for binding a run. No rendering here
(`dermgen.pipeline.Renderer`) and no Ray.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dermgen.cache import cache_dir
from dermgen.errors import ConfigError
from dermgen.hashing import sha256_file, sha256_state_dict, sha256_tree, short_hash
from dermgen.uri import is_s3

log = logging.getLogger(__name__)

DERM_T2IM_REPO = "MAli-Farooq/Derm-T2IM"
DERM_T2IM_FILE = "Derm-T2IM.safetensors"
DERM_T2IM_ENV = "DERMGEN_DERM_T2IM"  # local path or s3:// URI of Derm-T2IM.safetensors
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class ModelIdentity:
    """Who made the pixels: recorded in run.json and in every row."""

    model_id: str
    kind: str  # tiny | single_file | diffusers
    sha256: str
    short_hash: str
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ResolvedModel:
    model_id: str
    kind: str
    path: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def resolve_model(model: str, *, allow_pickle: bool = False, fetch: bool = True) -> ResolvedModel:
    """Map a model argument (preset, local path, s3:// URI) to something loadable; fail early and clearly.

    With ``fetch=False`` nothing is downloaded (used for validation before any GPU work).
    """
    if model == "tiny":
        return ResolvedModel("tiny", "tiny")
    if model == "derm-t2im":
        return _resolve_derm_t2im(allow_pickle=allow_pickle, fetch=fetch)
    if is_s3(model):
        if not fetch:
            check_suffix(model, "--model", allow_pickle)
            return ResolvedModel(model, "single_file", None)
        from dermgen.store import download_to_cache

        local = download_to_cache(model)
        resolved = resolve_model(str(local), allow_pickle=allow_pickle, fetch=fetch)
        resolved.model_id = model
        return resolved
    p = Path(model).expanduser()
    if p.is_dir():
        if not (p / "model_index.json").exists():
            raise ConfigError(
                f"--model: folder {model!r} has no model_index.json; expected a diffusers pipeline folder, "
                "a .safetensors checkpoint, an s3:// URI or one of the presets 'derm-t2im', 'tiny'"
            )
        return ResolvedModel(model, "diffusers", str(p))
    if p.is_file():
        check_suffix(str(p), "--model", allow_pickle)
        return ResolvedModel(model, "single_file", str(p))
    raise ConfigError(
        f"--model: {model!r} does not exist; expected a preset ('derm-t2im', 'tiny'), a local "
        "diffusers folder or .safetensors file, or an s3:// URI"
    )


def check_suffix(path: str, arg: str, allow_pickle: bool) -> None:
    lower = path.lower()
    if lower.endswith(PICKLE_SUFFIXES):
        if not allow_pickle:
            raise ConfigError(
                f"{arg}: {path!r} is a pickled checkpoint, which can run arbitrary code when loaded; "
                "expected a .safetensors file (pass --allow-pickle to load it anyway)"
            )
    elif not lower.endswith(".safetensors"):
        raise ConfigError(f"{arg}: {path!r} is not a .safetensors file (expected .safetensors)")


def _resolve_derm_t2im(*, allow_pickle: bool, fetch: bool) -> ResolvedModel:
    env = os.environ.get(DERM_T2IM_ENV)
    if env:
        r = resolve_model(env, allow_pickle=allow_pickle, fetch=fetch)
        r.model_id = "derm-t2im"
        r.extras["source"] = env
        return r
    cached = cache_dir("derm-t2im", DERM_T2IM_FILE)
    if cached.exists():
        return ResolvedModel("derm-t2im", "single_file", str(cached), {"source": str(cached)})
    if not fetch:
        return ResolvedModel("derm-t2im", "single_file", None, {"source": f"hf://{DERM_T2IM_REPO}"})
    try:
        from huggingface_hub import hf_hub_download

        local = hf_hub_download(DERM_T2IM_REPO, DERM_T2IM_FILE)
    except Exception as exc:  # no network, no hub, gated...
        raise ConfigError(
            f"--model derm-t2im: could not fetch {DERM_T2IM_FILE} from the hub ({type(exc).__name__}); "
            f"download it once and set {DERM_T2IM_ENV}=/path/to/{DERM_T2IM_FILE} (or an s3:// URI), "
            "or pass --model PATH"
        ) from None
    return ResolvedModel("derm-t2im", "single_file", local, {"source": f"hf://{DERM_T2IM_REPO}"})


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype(name: str | None, device: str):
    import torch

    if name in (None, "auto"):
        return torch.float16 if device.startswith("cuda") else torch.float32
    table = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if name not in table:
        raise ConfigError(f"--dtype: got {name!r}, expected one of auto, fp16, bf16, fp32")
    return table[name]


def quiet_hf_logging() -> None:
    """Silence import-time and dtype-cast chatter from transformers/diffusers (errors still show)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    try:
        import diffusers
        import transformers

        transformers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def load_pipeline(resolved: ResolvedModel, *, device: str, dtype: str | None = None):
    """Load the diffusers pipeline (no safety checker) and return it with its identity."""
    quiet_hf_logging()
    from diffusers import StableDiffusionPipeline

    torch_dtype = _dtype(dtype, device)
    if resolved.kind == "tiny":
        from dermgen.tiny import build_tiny_pipeline

        pipe = build_tiny_pipeline()
        sha = sha256_state_dict({"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder})
        identity = ModelIdentity("tiny", "tiny", sha, short_hash(sha), "generated")
    elif resolved.kind == "diffusers":
        pipe = StableDiffusionPipeline.from_pretrained(
            resolved.path,
            torch_dtype=torch_dtype,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            local_files_only=True,
        )
        sha = sha256_tree(resolved.path)
        identity = ModelIdentity(resolved.model_id, "diffusers", sha, short_hash(sha), resolved.path)
    elif resolved.kind == "single_file":
        pipe = _load_single_file(resolved.path, torch_dtype)
        sha = sha256_file(resolved.path)
        source = resolved.extras.get("source", resolved.path)
        identity = ModelIdentity(resolved.model_id, "single_file", sha, short_hash(sha), str(source))
    else:  # pragma: no cover - resolve_model only returns the kinds above
        raise ConfigError(f"unknown model kind {resolved.kind!r}")
    pipe = pipe.to(device=device, dtype=torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe, identity


def _load_single_file(path: str, torch_dtype):
    """Load an SD 1.x single-file (LDM layout) checkpoint offline with the configs shipped in the package."""
    from dermgen.single_file import load_single_file

    return load_single_file(path, torch_dtype)


def model_fingerprint(model: str, *, allow_pickle: bool = False) -> str:
    """A cheap identity of the model argument for binding a run to its plan, computed before GPU work.

    Local files and folders are hashed (cached); s3:// objects use their ETag and size; the tiny preset
    is fixed by its seeded configs. Raises ConfigError for missing or refused models.
    """
    if model == "tiny":
        from dermgen.tiny import TINY_SEED

        return f"tiny:seed={TINY_SEED}"
    resolved = resolve_model(model, allow_pickle=allow_pickle, fetch=False)
    if is_s3(model):
        from dermgen.store import S3Store

        bucket_uri, _, name = model.rpartition("/")
        store = S3Store(bucket_uri)
        try:
            head = store.client.head_object(Bucket=store.bucket, Key=store._key(name))
        except Exception:
            raise ConfigError(f"--model: {model!r} does not exist or cannot be read") from None
        return f"s3:etag={head.get('ETag', '').strip(chr(34))}:size={head.get('ContentLength')}"
    if resolved.path is None:
        return str(resolved.extras.get("source", model))
    if resolved.kind == "diffusers":
        return "sha256:" + sha256_tree(resolved.path)
    return "sha256:" + sha256_file(resolved.path)


def unet_config_for(model: str) -> dict[str, Any] | None:
    """The UNet config of a model argument, read without loading weights (None if unknown)."""
    import json

    if model == "tiny":
        from dermgen.tiny import TINY_UNET_CONFIG

        return dict(TINY_UNET_CONFIG)
    p = Path(model).expanduser()
    if p.is_dir() and (p / "unet" / "config.json").exists():
        return json.loads((p / "unet" / "config.json").read_text())
    packaged = CONFIG_DIR / "sd15" / "unet" / "config.json"  # single-file SD 1.x checkpoints, derm-t2im
    return json.loads(packaged.read_text()) if packaged.exists() else None
