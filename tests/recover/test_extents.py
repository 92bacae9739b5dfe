"""Journal index math against a byte-per-byte reference model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vra_appliance.recover.extents import ExtentMap, Piece, build_extent_map
from vra_appliance.recover.journal import Entry

SPAN = 200


def model(writes: list[tuple[int, int]]) -> list[tuple[int, int] | None]:
    """For every byte: (index of the newest write covering it, offset into that write's data), or None."""
    owner: list[tuple[int, int] | None] = [None] * SPAN
    for n, (offset, length) in enumerate(writes):
        for b in range(offset, min(offset + length, SPAN)):
            owner[b] = (n, b - offset)
    return owner


def resolve(pieces: list[Piece]) -> list[tuple[int, int] | None]:
    out: list[tuple[int, int] | None] = []
    for piece in pieces:
        for b in range(piece.start, piece.end):
            out.append(None if piece.loc is None else (piece.loc, piece.skip + b - piece.start))
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, SPAN - 1), st.integers(0, 60)), max_size=40),
    st.integers(0, SPAN - 1),
    st.integers(0, SPAN),
)
def test_lookup_matches_reference_model(writes, lo, length):
    extents = ExtentMap()
    for n, (offset, size) in enumerate(writes):
        extents.add(offset, min(size, SPAN - offset), n)
    expected = model(writes)
    length = min(length, SPAN - lo)
    pieces = extents.lookup(lo, length)
    assert resolve(pieces) == expected[lo : lo + length]
    # pieces are contiguous and in order; the ranges never overlap
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:], strict=False))
    ranges = extents.ranges()
    assert all(r1[1] <= r2[0] for r1, r2 in zip(ranges, ranges[1:], strict=False))
    assert all(s < e for s, e, _, _ in ranges)
    assert extents.covered_bytes() == sum(1 for o in expected if o is not None)


def test_split_cases():
    extents = ExtentMap()
    extents.add(0, 100, "a")
    extents.add(40, 20, "b")  # inside: a | b | a
    assert extents.ranges() == [(0, 40, 0, "a"), (40, 60, 40, "b"), (60, 100, 0, "a")]
    extents.add(30, 40, "c")  # over the middle, partial both sides
    assert extents.ranges() == [(0, 30, 0, "a"), (30, 70, 30, "c"), (70, 100, 0, "a")]
    extents.add(0, 30, "d")  # exactly a range
    extents.add(90, 20, "e")  # past the end
    assert extents.ranges() == [(0, 30, 0, "d"), (30, 70, 30, "c"), (70, 90, 0, "a"), (90, 110, 90, "e")]
    assert extents.lookup(85, 30) == [Piece(85, 90, 85, "a"), Piece(90, 110, 0, "e"), Piece(110, 115, 0, None)]
    extents.add(0, 200, "f")
    assert extents.ranges() == [(0, 200, 0, "f")]


def test_build_extent_map_takes_one_volume():
    entries = [
        Entry(1, 0, "v1", 0, 10, "w1"),
        Entry(2, 0, None, 0, 0, None),
        Entry(3, 0, "v2", 0, 10, "w3"),
        Entry(4, 0, "v1", 5, 10, "w4"),
    ]
    assert build_extent_map(entries, "v1").ranges() == [(0, 5, 0, "w1"), (5, 15, 5, "w4")]
