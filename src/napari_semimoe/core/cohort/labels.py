"""Instance ids across block borders: a union-find over the blocks' faces.

Each block labels its interior with local ids 1..n (seeing a halo around it) and reports,
per side, the ids along its interior edge and, in its own labelling, just outside it. Two
touching pixels on either side of a border belong to one gland when BOTH blocks say so (each
sees the pixel across the border as part of the same gland as its own); then their local
ids are joined. Final ids are 1..N in the order glands first appear (block by block).
"""

from __future__ import annotations

import numpy as np


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[tuple[int, int], tuple[int, int]] = {}

    def find(self, a: tuple[int, int]) -> tuple[int, int]:
        p = self.parent.setdefault(a, a)
        if p != a:
            root = self.find(p)
            self.parent[a] = root
            return root
        return a

    def union(self, a: tuple[int, int], b: tuple[int, int]) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if rb < ra:
                ra, rb = rb, ra
            self.parent[rb] = ra


def _pairs(a_in, a_out, b_in, b_out) -> set[tuple[int, int]]:
    """Local-id pairs joined across one border (a: this side, b: the other)."""
    if a_out is None or b_out is None:
        return set()
    ai, ao = np.asarray(a_in), np.asarray(a_out)
    bi, bo = np.asarray(b_in), np.asarray(b_out)
    ok = (ai > 0) & (bi > 0) & (ai == ao) & (bi == bo)
    return set(zip(ai[ok].tolist(), bi[ok].tolist()))


def join_blocks(
    grid: tuple[int, int], labels: dict[int, dict]
) -> tuple[dict[int, list[int]], int, list[int]]:
    """``labels[b]``: block b's ``count``, ``areas`` and ``sides`` (see ``label_block``).
    Returns per block the table local id -> final id, the number of glands and their areas
    (px, in final-id order)."""
    rows, cols = grid
    uf = UnionFind()
    for b, lab in labels.items():
        for i in range(1, lab["count"] + 1):
            uf.find((b, i))
    for b, lab in labels.items():
        r, c = divmod(b, cols)
        if c + 1 < cols:
            o = labels[b + 1]
            for x, y in _pairs(*lab["sides"]["right"], *o["sides"]["left"]):
                uf.union((b, x), (b + 1, y))
        if r + 1 < rows:
            o = labels[b + cols]
            for x, y in _pairs(*lab["sides"]["bottom"], *o["sides"]["top"]):
                uf.union((b, x), (b + cols, y))
    final: dict[tuple[int, int], int] = {}
    areas: list[int] = []
    luts: dict[int, list[int]] = {}
    for b in sorted(labels):
        lab = labels[b]
        lut = [0] * (lab["count"] + 1)
        for i in range(1, lab["count"] + 1):
            root = uf.find((b, i))
            if root not in final:
                final[root] = len(final) + 1
                areas.append(0)
            lut[i] = final[root]
            areas[lut[i] - 1] += int(lab["areas"][i])
        luts[b] = lut
    return luts, len(final), areas
