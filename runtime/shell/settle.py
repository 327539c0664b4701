"""Settling a plugin's frames with the device's own record, exactly once.

When a plugin is gone (a fault, or a revoke it could not quiesce for), whatever it held is
settled with what the device did, read from the IOMMU's frame record (never from the plugin):
TX frames the device read are done and never sent again; the others are re-sent first, in the
guest's order (or abandoned and counted, where there is no other path); RX buffers the device
wrote are delivered in the order it wrote them; the rest go back to the pool. Without a record
(no VF behind the driver) which TX frames left is unknown, and all are re-sent.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from npa.nic_model.frames import Frames, gather

from .pool import FILL, TX, FramePool


def settle(pool: FramePool, record, resend: bool, stats: Counter) -> Frames:
    """Take back every TX and FILL frame; returns the received frames to deliver, in order."""
    tx = pool.held(TX)
    if record is not None:
        sent = record.was_read(tx)
        stats["tx_settled_sent"] += int(sent.sum())
        pool.release(tx[sent])
        tx = tx[~sent]
    if resend:
        stats["tx_resent_after_fault"] += pool.requeue_tx(tx)
    else:
        stats["tx_abandoned"] += len(tx)
        pool.release(tx)
    fill = pool.held(FILL)
    frames = Frames.empty()
    if record is not None:
        got = fill[record.was_written(fill)]
        got = got[np.argsort(record.written_at[got], kind="stable")]  # arrival order
        frames = gather(pool.mem, pool.offsets(got), record.written_len[got])
        stats["rx_frames"] += len(frames)
        stats["rx_settled"] += len(frames)
        record.revoke()
    pool.release(fill)
    return frames
