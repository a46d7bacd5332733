from __future__ import annotations

from geoseg.tasks.components import connected_groups


def test_groups_are_transitive_and_keys_without_links_stand_alone() -> None:
    keys = [(0, 1), (1, 1), (2, 1), (3, 1)]
    groups = connected_groups(keys, [((2, 1), (1, 1)), ((0, 1), (1, 1))])
    assert groups == [[(0, 1), (1, 1), (2, 1)], [(3, 1)]]


def test_groups_come_in_order_of_their_first_key_whatever_the_links_order() -> None:
    assert connected_groups([5, 3, 9, 1], [(9, 1), (5, 3)]) == [[1, 9], [3, 5]]
