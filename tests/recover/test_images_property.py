"""Property: at every checkpoint, the point-in-time image equals the reference model of the volume,
also after the promoter moved part of the journal into the replica (and while images pin it)."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from .helpers import Site, sha

SIZES = {"vm1-disk0": 48 << 10, "vm2-disk0": 20 << 10 | 512}

write_op = st.tuples(st.just("write"), st.sampled_from(sorted(SIZES)), st.integers(0, 1 << 30),
                     st.integers(1, 9000), st.integers(0, 2**32))
ops = st.one_of(
    write_op,
    write_op,
    write_op,
    st.tuples(st.just("checkpoint")),
    st.tuples(st.just("checkpoint")),
    st.tuples(st.just("flush")),
    st.tuples(st.just("promote"), st.floats(0, 25)),
    st.tuples(st.just("hold"), st.integers(0, 100)),
    st.tuples(st.just("release"), st.integers(0, 100)),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["memory", "file"]), program=st.lists(ops, min_size=8, max_size=50),
       seed=st.integers(0, 1000))
def test_image_at_every_checkpoint_equals_the_model(kind, program, seed):
    with tempfile.TemporaryDirectory() as tmp:
        site = Site(Path(tmp), kind, SIZES, seed=seed)
        held = []  # (image, expected hash): images kept open across promotions
        promoted_any = False
        checks = 0
        try:
            for op in program:
                if op[0] == "write":
                    _, volume, offset, length, data_seed = op
                    offset %= SIZES[volume]
                    length = min(length, SIZES[volume] - offset)
                    site.write(volume, offset, random.Random(data_seed).randbytes(length))
                elif op[0] == "checkpoint":
                    site.checkpoint()
                elif op[0] == "flush":
                    site.flush()
                elif op[0] == "promote":
                    site.flush()
                    site.clock.advance(op[1])
                    before = site.vpg.replica.promoted_seq
                    site.vpg.promote_once()
                    promoted_any |= site.vpg.replica.promoted_seq > before
                    checks += site.check_all_checkpoints()
                    for image, expected in held:
                        assert sha(image.pread(0, image.size)) == expected
                elif op[0] == "hold":
                    offered = site.vpg.checkpoints()
                    if offered:
                        info = offered[op[1] % len(offered)]
                        volume = sorted(SIZES)[op[1] % 2]
                        held.append((site.vpg.image(volume, info.checkpoint_id),
                                     site.snapshots[info.checkpoint_id][volume]))
                elif op[0] == "release" and held:
                    held.pop(op[1] % len(held))[0].close()
            site.flush()
            checks += site.check_all_checkpoints()
            site.clock.advance(5)
            site.vpg.promote_once()
            checks += site.check_all_checkpoints()
            event(f"{kind}: promoted during the run: {promoted_any}")
            event(f"checkpoint images checked: {'0' if not checks else '1-9' if checks < 10 else '10+'}")
            event(f"images held: {min(len(held), 2)}")
            for image, expected in held:
                assert sha(image.pread(0, image.size)) == expected
                # also in pieces that straddle journal and replica ranges
                parts = [image.pread(o, min(7777, image.size - o)) for o in range(0, image.size, 7777)]
                assert sha(b"".join(parts)) == expected
            # no image open: everything older than the history ends up in the replica
            for image, _ in held:
                image.close()
            held = []
            site.clock.advance(100)
            site.vpg.promote_once()
            assert site.vpg.replica.promoted_seq == site.seq
            for volume in SIZES:
                assert sha(site.vpg.replica.pread(volume, 0, SIZES[volume])) == sha(bytes(site.model[volume]))
        finally:
            for image, _ in held:
                image.close()
            site.close()
