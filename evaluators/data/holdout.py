"""A validation split for data that has none: a fixed share of its training images, held out.

Images are ranked by a hash of their name (a COCO `file_name`, a path relative to a YAML's root),
so the same data gives the same split on any machine and in any file order. The choice is made on
the image list, before anything is decoded: both parts agree whatever fails to decode later.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from nas.errors import UserError

HOLD_OUT_FRACTION = 0.2
PARTS = ("train", "val")


def held_out_count(n: int, fraction: float = HOLD_OUT_FRACTION) -> int:
    """Images held out of n: round(fraction * n), at least 1 and leaving at least 1 to train on (0 if n < 2)."""
    return min(max(1, round(fraction * n)), n - 1) if n >= 2 else 0


def held_out_names(names: list[str], fraction: float = HOLD_OUT_FRACTION) -> set[str]:
    """The distinct names held out for validation: the lowest-ranked by SHA-1 (a name listed twice
    goes one way only, so the parts never share a file)."""
    distinct = sorted(set(names), key=lambda name: (hashlib.sha1(name.encode()).digest(), name))
    return set(distinct[:held_out_count(len(distinct), fraction)])


@dataclass(frozen=True)
class Holdout:
    """Which part of a split without validation data a reader keeps."""

    part: str  # "train": the images not held out; "val": the held-out ones
    fraction: float = HOLD_OUT_FRACTION

    def __post_init__(self):
        assert self.part in PARTS, self.part

    def select(self, names: list[str], where: str) -> list[int]:
        """Indices (in the given order) of the images of this part. Too few images to hold any out:
        the train part keeps them all, the val part is a UserError naming `where`."""
        val = held_out_names(names, self.fraction)
        if self.part == "val" and not val:
            raise UserError(f"{where}: {len(set(names))} image(s), too few to hold out a validation split "
                            "(needs at least 2); give the data a separate val split")
        return [i for i, name in enumerate(names) if (name in val) == (self.part == "val")]

    def counts(self, names: list[str]) -> dict:
        """{"fraction", "n_val", "n_train"}: images listed in each part (before any fails to decode)."""
        val = held_out_names(names, self.fraction)
        n_val = sum(name in val for name in names)
        return {"fraction": self.fraction, "n_val": n_val, "n_train": len(names) - n_val}

    @property
    def owns_file_problems(self) -> bool:
        """Problems not tied to one image (orphan label files, annotations of unknown images) are
        reported once, by the train part."""
        return self.part == "train"

    def rename(self, name: str) -> str:
        """Log name of this part, e.g. 'coco128/data.yaml train, held out for val (20%)'."""
        pct = f"{self.fraction:.0%}"
        return f"{name}, held out for val ({pct})" if self.part == "val" else f"{name} (less the {pct} held out)"
