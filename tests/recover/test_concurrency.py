"""Appends, promotion and image reads at the same time (as in `vra serve`): images stay exact."""

from __future__ import annotations

import random
import threading

from vra_appliance.recover.promoter import RetentionPolicy

from .helpers import Site

SIZES = {"a": 256 << 10, "b": 128 << 10}


def test_appends_promotion_and_images_concurrently(tmp_path):
    site = Site(tmp_path, "file", SIZES, policy=RetentionPolicy(history_s=5), segment_bytes=32 << 10)
    errors: list[BaseException] = []

    def replicate() -> None:
        rng = random.Random(3)
        try:
            for _ in range(150):
                for _ in range(rng.randrange(1, 6)):
                    volume = rng.choice(sorted(SIZES))
                    length = rng.randrange(1, 20_000)
                    offset = rng.randrange(SIZES[volume] - length)
                    site.write(volume, offset, rng.randbytes(length))
                site.checkpoint()
                site.flush()
                site.clock.advance(1)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    appender = threading.Thread(target=replicate)
    appender.start()
    rng = random.Random(4)
    checked = 0
    while appender.is_alive() or checked == 0:
        site.vpg.promote_once()
        offered = site.vpg.checkpoints()
        if offered:
            info = rng.choice(offered)
            volume = rng.choice(sorted(SIZES))
            assert site.image_hash(volume, info.checkpoint_id) == site.snapshots[info.checkpoint_id][volume]
            checked += 1
    appender.join()
    assert not errors, errors
    assert site.vpg.last_seq() == site.seq
    assert site.check_all_checkpoints() >= 1
    site.close()
