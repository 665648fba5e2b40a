"""A batch of JSON objects read column by column, grouped by their key tuple.

Entries of one layout share their keys, in the same order: a batch is then one group, each of its
columns one C-level pass (`itemgetter` over the group, `zip` of the rows) instead of a `dict.get`
per entry and field. Presence bits and keys without a column are worked out once per group.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd

from faceit_etl.validation.fields import Field, presence_mask


class Shapes:
    """`objects` (dicts, or None read as `{}`) by key tuple: `column(key)` is `[o.get(key) for o in
    objects]`, built a group at a time and put back in the objects' order."""

    def __init__(self, objects: Sequence[dict | None]):
        self.size = len(objects)
        shapes = [tuple(o) if o is not None else () for o in objects]
        self.groups: dict[tuple[str, ...], list[int]] = {keys: [] for keys in dict.fromkeys(shapes)}
        self._gather = None
        if len(self.groups) == 1:
            self.groups[shapes[0]] = list(range(self.size))
            members = [objects]
        else:
            for position, keys in enumerate(shapes):
                self.groups[keys].append(position)
            members = [[objects[p] for p in positions] for positions in self.groups.values()]
            if len(self.groups) > 1:  # where each object's value lies among the groups' values, joined
                order = [p for positions in self.groups.values() for p in positions]
                self._gather = itemgetter(*np.argsort(order).tolist())
        self._columns = [_group_columns(keys, group) for keys, group in zip(self.groups, members)]

    def column(self, key: str) -> list[Any]:
        if self._gather is None:
            values = self._columns[0].get(key) if self._columns else None
            return list(values) if values is not None else [None] * self.size
        joined: list[Any] = []
        for columns, positions in zip(self._columns, self.groups.values()):
            values = columns.get(key)
            joined.extend(values if values is not None else [None] * len(positions))
        return list(self._gather(joined))

    def presence(self, fields: tuple[Field, ...]) -> pd.Series:
        """Each object's presence bits (`fields.presence_mask`), as an int64 column."""
        bits = np.empty(self.size, dtype=np.int64)
        for keys, positions in self.groups.items():
            bits[positions] = presence_mask(fields, keys)
        return pd.Series(bits)

    def unknown_keys(self, known: Collection[str], prefix: str = "") -> Counter[str]:
        """How many objects hold each key outside `known` (named with `prefix`)."""
        counts: Counter[str] = Counter()
        for keys, positions in self.groups.items():
            counts.update({f"{prefix}{key}": len(positions) for key in keys if key not in known})
        return counts


def _group_columns(keys: tuple[str, ...], group: Sequence[dict | None]) -> dict[str, tuple]:
    """The values of each key in a group of objects that all have exactly `keys`."""
    if not keys:
        return {}
    if len(keys) == 1:
        return {keys[0]: tuple(o[keys[0]] for o in group)}
    return dict(zip(keys, zip(*map(itemgetter(*keys), group))))
