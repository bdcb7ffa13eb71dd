"""Where a row's image bytes live: the one rule of both image layouts, for writers and readers.

Every rendered image's PNG bytes are in its row (``image.bytes``, checked by ``image_sha256``). The layout
(``--images``, recorded in run.json as ``images``; a run.json without it is ``files``) decides whether a
separate PNG object exists too:

- ``files`` (default): one PNG object per image, at
  ``images/<kept|dropped>/<label>/<sample_id>.<attempt>.png``; ``image.path`` is its key. Browsable PNGs,
  tools that want files; every image is stored twice.
- ``parquet``: the bytes live only in the row and ``image.path`` is null; no PNG objects exist. One object
  per shard: fewer objects and PUT requests, half the storage.

Writers ask `image_value` what to put in the row and which PNG object (if any) to write; readers ask
`image_bytes` for a row's bytes and `image_name` for the name to show, so neither knows the layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from dermgen.rundir.layout import image_key

if TYPE_CHECKING:
    from dermgen.store import Store

ImageLayout = Literal["files", "parquet"]
IMAGE_LAYOUTS: tuple[str, ...] = ("files", "parquet")
LEGACY_IMAGE_LAYOUT: ImageLayout = "files"  # what a run.json written before the layout was recorded means


def writes_png_objects(layout: ImageLayout) -> bool:
    """True when the layout keeps a PNG object per image beside the row's bytes."""
    return layout == "files"


def image_value(
    layout: ImageLayout, png: bytes, sample_id: str, label: str, attempt_id: str, kept: bool
) -> tuple[dict[str, Any], str | None]:
    """The row's ``image`` struct for a rendered PNG, and the key of the PNG object to write (None: none)."""
    key = image_key(sample_id, label, attempt_id, kept) if writes_png_objects(layout) else None
    return {"bytes": png, "path": key}, key


def image_bytes(store: Store, image: dict[str, Any] | None) -> bytes | None:
    """A row's image bytes: those held in the row, else the PNG object its path names (KeyError if that
    object is missing); None when the row has no image (failed, or a dropped image that was not saved)."""
    if not image:
        return None
    if image.get("bytes") is not None:
        return image["bytes"]
    if image.get("path"):
        return store.get(image["path"])
    return None


def image_name(image: dict[str, Any] | None, sample_id: str) -> str:
    """How a row's image is named in reports and outputs: its PNG object's key, else its sample id."""
    return (image or {}).get("path") or sample_id


def layout_problem(layout: ImageLayout, image: dict[str, Any] | None) -> str | None:
    """How a row's stored ``image`` departs from the run's layout (None: it does not)."""
    if not image:
        return None
    if image.get("bytes") is None:
        return "image bytes are missing from the row"
    if layout == "parquet" and image.get("path"):
        return (
            f"names a PNG object ({image['path']}) but the run keeps images in the Parquet rows "
            "(images: parquet)"
        )
    if layout == "files" and not image.get("path"):
        return "names no PNG object but the run keeps one per image (images: files)"
    return None
