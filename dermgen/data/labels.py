"""Label names -> class ids, shared by generated runs and real-image folders so both train the same way.

The default is the study's binary task: ``benign`` = 0, ``malignant`` = 1. Names match case-insensitively.
Aliases map other vocabularies onto the classes (``DERM_ALIASES`` covers "nevus"/"melanoma" and the
HAM10000 diagnosis codes); they are opt-in, so an unexpected folder name fails loudly instead of being
silently folded into a class.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dermgen.errors import ConfigError

DEFAULT_CLASSES: dict[str, int] = {"benign": 0, "malignant": 1}

# Common names of the two classes in ISIC / HAM10000 exports. HAM10000 codes: nv (melanocytic nevi),
# bkl (benign keratosis), df (dermatofibroma), vasc (vascular) are benign; mel (melanoma),
# bcc (basal cell carcinoma), akiec (actinic keratosis / intraepithelial carcinoma) are malignant.
DERM_ALIASES: dict[str, str] = {
    "nevus": "benign",
    "nevi": "benign",
    "naevus": "benign",
    "nv": "benign",
    "bkl": "benign",
    "df": "benign",
    "vasc": "benign",
    "melanoma": "malignant",
    "mel": "malignant",
    "bcc": "malignant",
    "akiec": "malignant",
}


class LabelMap(BaseModel):
    """Class names to integer ids, with optional aliases; lookups are case-insensitive."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    classes: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_CLASSES))
    aliases: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> LabelMap:
        if not self.classes:
            raise ValueError("classes: empty; expected at least one name -> id")
        lowered = [k.lower() for k in self.classes]
        if len(set(lowered)) != len(lowered):
            raise ValueError(f"classes: {self.classes!r} has names that differ only by case")
        ids = sorted(self.classes.values())
        if ids != list(range(len(ids))):
            raise ValueError(f"classes: ids {ids} must be 0..{len(ids) - 1}, each used once")
        for alias, target in self.aliases.items():
            if target.lower() not in lowered:
                raise ValueError(
                    f"aliases: {alias!r} -> {target!r} names no class (classes: {list(self.classes)})"
                )
        return self

    @classmethod
    def with_aliases(cls, classes: Mapping[str, int] | None = None) -> LabelMap:
        """The given (default: benign/malignant) classes plus ``DERM_ALIASES`` that point at them."""
        classes = dict(classes or DEFAULT_CLASSES)
        names = {k.lower() for k in classes}
        return cls(classes=classes, aliases={a: t for a, t in DERM_ALIASES.items() if t in names})

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        """Class names ordered by id."""
        return [name for name, _ in sorted(self.classes.items(), key=lambda kv: kv[1])]

    def canonical(self, name: str) -> str | None:
        """The class name for `name` (itself or through an alias), or None if it maps to no class."""
        key = name.strip().lower()
        for cls_name in self.classes:
            if cls_name.lower() == key:
                return cls_name
        for alias, target in self.aliases.items():
            if alias.lower() == key:
                return self.canonical(target)
        return None

    def id(self, name: str) -> int:
        """The class id of `name`; ConfigError naming the known names if it maps to none."""
        cls_name = self.canonical(name)
        if cls_name is None:
            known = list(self.classes) + list(self.aliases)
            raise ConfigError(f"label {name!r} maps to no class; expected one of {known} (case-insensitive)")
        return self.classes[cls_name]

    def name(self, class_id: int) -> str:
        for cls_name, i in self.classes.items():
            if i == class_id:
                return cls_name
        raise KeyError(class_id)


def as_label_map(value: LabelMap | Mapping[str, int] | None) -> LabelMap:
    """Accept a LabelMap, a plain {name: id} dict, or None (the default benign/malignant map)."""
    if value is None:
        return LabelMap()
    if isinstance(value, LabelMap):
        return value
    try:
        return LabelMap(classes=dict(value))
    except Exception as exc:  # pydantic ValidationError -> one readable line
        raise ConfigError(
            f"label_map: {dict(value)!r} is not a valid mapping of names to ids 0..n-1: {exc}"
        ) from None
