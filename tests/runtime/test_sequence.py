"""Round-robin dispatch and in-order release (heliosdb/runtime/sequence.py)."""
from __future__ import annotations

import random

from heliosdb.runtime.sequence import Resequencer, RoundRobin, Sequenced


def test_batches_alternate_and_control_items_go_to_every_replica():
    # b b w b b: batches to 0 1 . 0 1 (the watermark does not take a turn), all numbered
    rr = RoundRobin(2)
    routes = [rr.route(kind == "b", 10) for kind in "bbwbb"]
    assert [to for _, to in routes] == [[0], [1], [0, 1], [0], [1]]
    assert [m.seq for m, _ in routes] == [0, 1, 2, 3, 4]
    assert [m.offset for m, _ in routes] == [0, 10, 20, 20, 30]     # rows dispatched before


def test_answers_in_any_arrival_order_come_out_in_sequence_with_one_copy_of_broadcasts():
    rr = RoundRobin(3)
    sent = []
    for i in range(60):
        msg, to = rr.route(i % 7 != 3, 1)
        for p in to:
            sent.append((p, msg.seq))
    for seed in range(5):
        arrivals = list(sent)
        random.Random(seed).shuffle(arrivals)
        # each replica answers in the order it was sent: keep per-replica order
        per = {p: [s for q, s in sent if q == p] for p in range(3)}
        order = []
        cursor = {p: 0 for p in range(3)}
        for p, _ in arrivals:
            order.append((p, per[p][cursor[p]]))
            cursor[p] += 1
        r = Resequencer()
        out = []
        for p, seq in order:
            r.add(Sequenced(seq, [seq]))
            out += [m.seq for m in r.ready()]
        assert out == list(range(60)) and r.pending == 0
