"""The dirty map: coalescing, merging the closest neighbours under a budget, and its two invariants checked
with hypothesis: every written byte stays covered, and the budget is never exceeded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vra_appliance.iofilter.dirty_map import EXTENT_BYTES, DirtyMap

B = 4096


def blocks(dm: DirtyMap, volume: str = "v") -> list[tuple[int, int]]:
    """Extents as inclusive block ranges, the way the architecture page writes them (2..9)."""
    return [(off // B, (off + n) // B - 1) for off, n in dm.extents(volume)]


def test_the_architecture_example():
    dm = DirtyMap(64 * EXTENT_BYTES)
    for b in (2, 5, 9, 23, 27, 30):
        dm.add("v", b * B, B)
    assert blocks(dm) == [(2, 2), (5, 5), (9, 9), (23, 23), (27, 27), (30, 30)]
    dm.merge_to(2)
    assert blocks(dm) == [(2, 9), (23, 30)]
    assert dm.over_coverage == 10 * B  # blocks 3,4,6,7,8 and 24,25,26,28,29 were never written
    dm.merge_to(1)
    assert blocks(dm) == [(2, 30)]
    assert dm.over_coverage == (10 + 13) * B


def test_overlapping_and_touching_writes_coalesce():
    dm = DirtyMap()
    dm.add("v", 100, 50)
    dm.add("v", 150, 10)  # touches
    dm.add("v", 120, 100)  # overlaps and extends
    dm.add("v", 500, 10)
    dm.add("v", 0, 1000)  # swallows everything
    assert dm.extents("v") == [(0, 1000)]
    assert dm.extent_count == 1 and dm.over_coverage == 0


def test_volumes_are_separate_and_take_clears():
    dm = DirtyMap()
    dm.add("a", 0, 10)
    dm.add("b", 0, 10)
    dm.add("b", 100, 10)
    assert dm.take("b") == [(0, 10), (100, 10)]
    assert dm.extents("b") == [] and dm.extents("a") == [(0, 10)]
    assert dm.extent_count == 1 and bool(dm)
    dm.clear()
    assert not dm and dm.memory_bytes == 0


def test_over_budget_merges_the_smallest_gaps_first():
    dm = DirtyMap(4 * EXTENT_BYTES)
    for off in (0, 10, 1000, 1010, 5000):  # gaps: 9, 989, 9, 3989
        dm.add("v", off, 1)
    # 5 extents > 4: down to 3 (75 %), closing the two gaps of 9
    assert dm.extents("v") == [(0, 11), (1000, 11), (5000, 1)]
    assert dm.over_coverage == 18
    assert dm.merge_passes == 1


def test_merging_spans_volumes_but_never_joins_them():
    dm = DirtyMap(4 * EXTENT_BYTES)
    dm.add("a", 0, 1)
    dm.add("a", 1_000_000, 1)
    dm.add("b", 0, 1)
    dm.add("b", 5, 1)
    dm.add("b", 10, 1)  # 5 extents: b's gaps (4, 4) are the smallest
    assert dm.extents("a") == [(0, 1), (1_000_000, 1)]
    assert dm.extents("b") == [(0, 11)]


def test_saved_state_round_trips():
    dm = DirtyMap(4 * EXTENT_BYTES)
    for off in (0, 10, 1000, 1010, 5000):
        dm.add("v", off, 1)
    again = DirtyMap(4 * EXTENT_BYTES)
    again.load_volume("v", dm.volume_state("v"))
    assert again.extents("v") == dm.extents("v")
    assert again.over_coverage == dm.over_coverage


def test_a_budget_that_holds_nothing_is_refused():
    with pytest.raises(ValueError, match="at least 16"):
        DirtyMap(8)


writes = st.lists(st.tuples(st.sampled_from(["v1", "v2", "v3"]), st.integers(0, 1 << 20), st.integers(1, 5000)),
                  min_size=1, max_size=300)


@settings(max_examples=150, deadline=None)
@given(writes=writes, budget_extents=st.integers(3, 40))
def test_every_written_byte_stays_covered_and_the_budget_holds(writes, budget_extents):
    dm = DirtyMap(budget_extents * EXTENT_BYTES)
    written: dict[str, list[tuple[int, int]]] = {}
    for volume, offset, length in writes:
        dm.add(volume, offset, length)
        written.setdefault(volume, []).append((offset, length))
        assert dm.memory_bytes <= dm.budget_bytes
        assert dm.extent_count <= dm.max_extents
    for volume, ranges in written.items():
        for offset, length in ranges:
            assert dm.covers(volume, offset, length), (volume, offset, length)
        # extents stay sorted, disjoint and not touching
        ext = dm.extents(volume)
        assert all(a + n < b for (a, n), (b, _) in zip(ext, ext[1:], strict=False))
    # over-coverage bounds what is covered beyond the bytes really written
    exact = sum(len({b for o, n in r for b in range(o, o + n)}) for r in written.values())
    assert exact <= dm.covered_bytes() <= exact + dm.over_coverage


@settings(max_examples=50, deadline=None)
@given(writes=writes)
def test_without_budget_pressure_the_map_is_exact(writes):
    dm = DirtyMap(10_000 * EXTENT_BYTES)
    written: dict[str, set[int]] = {}
    for volume, offset, length in writes:
        dm.add(volume, offset, length)
        written.setdefault(volume, set()).update(range(offset, offset + length))
    for volume, covered in written.items():
        assert {b for o, n in dm.extents(volume) for b in range(o, o + n)} == covered
    assert dm.over_coverage == 0
