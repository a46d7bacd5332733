"""Connected groups of keys under a pairwise relation (union-find)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

Key = TypeVar("Key", int, tuple[int, int])

__all__ = ["connected_groups"]


def connected_groups(keys: Iterable[Key], links: Iterable[tuple[Key, Key]]) -> list[list[Key]]:
    """Connected groups of ``keys`` under ``links``, each sorted, in order of their first key.

    Every key a link names must be among ``keys``.

    >>> connected_groups(range(4), [(2, 1), (0, 1)])
    [[0, 1, 2], [3]]
    """
    parent: dict[Key, Key] = {key: key for key in keys}

    def root(key: Key) -> Key:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for x, y in links:
        rx, ry = root(x), root(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    groups: dict[Key, list[Key]] = {}
    for key in sorted(parent):
        groups.setdefault(root(key), []).append(key)
    return list(groups.values())
