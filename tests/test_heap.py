"""Tests for geoseg.tasks.heap: long-lived objects left out of garbage collection for a while."""

from __future__ import annotations

import gc

import pytest

from geoseg.tasks.heap import old_objects_frozen


def test_objects_alive_on_entry_are_frozen_until_exit() -> None:
    assert gc.get_freeze_count() == 0
    with old_objects_frozen():
        frozen = gc.get_freeze_count()
        young = [[n] for n in range(1000)]
        assert frozen > 1000
        # Objects made inside are not frozen; frozen ones may still be freed by refcount.
        assert gc.get_freeze_count() <= frozen
    assert gc.get_freeze_count() == 0
    assert gc.is_tracked(young)


def test_an_exception_still_unfreezes_and_propagates() -> None:
    @old_objects_frozen()
    def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        fails()
    assert gc.get_freeze_count() == 0


def test_cyclic_garbage_made_inside_is_still_collected() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    with old_objects_frozen():
        node = Node()
        del node
        assert gc.collect() >= 1
