"""Rule evaluation over the evaluated rows (each live row and its root): one
AND of bit-mask pairs per attribute for buckets with tables, (row, rule)
pairs for bigger buckets; matches and errors combine as
`decision.combine` does. A bucket with a test of no vector form sends its
rows one by one."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from ripl.batch.cells import CellSpec, _cells
from ripl.batch.chains import Chains, FrameFacts
from ripl.batch.columns import BoolArray, IntArray, Unsupported, _nonzero, _ranges
from ripl.batch.frame import Column, Frame, _typed_column
from ripl.batch.plan import DENY, BucketArrays, Derived, Plan
from ripl.batch.roots import Roots
from ripl.batch.rows import Entities, Rows, _concat

log = logging.getLogger(__name__)


class Layout:
    """The evaluated rows: each live row, followed by its root where it has
    one, so that both sides of a row sit next to each other."""

    def __init__(self, rows: Rows, roots: Roots, chains: Chains, own: IntArray) -> None:
        capped = roots.has[own]
        self.own_at = np.arange(len(own)) + np.cumsum(capped) - capped
        self.root_at = self.own_at + 1  # meaningful where capped
        size = len(own) + int(np.count_nonzero(capped))
        self.size = size
        self.capped = capped
        capping = own[capped]  # the rows that have a root
        self.roots = self.root_at[capped]  # where their roots are evaluated
        self.src = np.empty(size, dtype=np.int64)
        self.src[self.own_at] = own
        self.src[self.roots] = capping
        self.is_root = np.zeros(size, dtype=bool)
        self.is_root[self.roots] = True
        self.ptype = rows.ptype[self.src]
        self.root_type = roots.code[capping]
        self.ptype[self.roots] = self.root_type
        self.rtype = rows.rtype[self.src]
        self.action = rows.action[self.src]
        self.root_entity = roots.entity[capping]
        self.entity = np.full(size, -1, dtype=np.int64)
        self.entity[self.roots] = self.root_entity
        self.chain = chains.index[self.src]
        self.chain[self.roots] = -1


class Verdicts:
    """Per evaluated row: effect, best matching effect (-1: none), erring
    strict rules and winning matches; and the rules each row lists."""

    def __init__(self, size: int, parts: BucketArrays) -> None:
        self.effect = np.full(size, DENY, dtype=np.int8)
        self.best = np.full(size, -1, dtype=np.int64)
        self.blocking = np.zeros(size, dtype=np.int64)
        self.winners = np.zeros(size, dtype=np.int64)
        self.parts = parts
        self._tables: list[tuple[IntArray, IntArray, npt.NDArray[np.uint32]]] = []
        self._pairs: list[tuple[IntArray, IntArray, BoolArray]] = []

    def listed(self, chosen: BoolArray) -> tuple[IntArray, IntArray]:
        """The (evaluated row, rule) entries of the rows `chosen`, by row."""
        parts = self.parts
        rows, rules = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for at, bucket, member in self._tables:
            keep = chosen[at]
            masks = np.where(keep[:, None], member, np.uint32(0)).astype("<u4")
            octets = masks.view(np.uint8).ravel()
            some = _nonzero(octets)
            value = octets[some]
            count = _BYTE_BITS[value]
            bit = _BYTE_POSITIONS[_ranges(_BYTE_START[value], count)]
            position = np.repeat(some, count)
            per_row = masks.shape[1] * 4
            row = position // per_row
            bit = bit + 8 * (position % per_row)
            rows.append(at[row])
            slot = parts.slot_start[bucket[row]] + bit
            rules.append(parts.slot_rule[slot].astype(np.int64))
        for pair_row, pair_slot, listed in self._pairs:
            pick = _nonzero(listed & chosen[pair_row])
            rows.append(pair_row[pick])
            rules.append(parts.slot_rule[pair_slot[pick]].astype(np.int64))
        row_of, rule_of = np.concatenate(rows), np.concatenate(rules).astype(np.int64)
        if sum(len(r) > 0 for r in rows) > 1:
            order = np.argsort(row_of, kind="stable")
            row_of, rule_of = row_of[order], rule_of[order]
        return row_of, rule_of


_BYTE_BITS = np.array([bin(v).count("1") for v in range(256)], dtype=np.int64)
_BYTE_START = np.cumsum(_BYTE_BITS) - _BYTE_BITS
_BYTE_POSITIONS = np.array(
    [bit for v in range(256) for bit in range(8) if v >> bit & 1], dtype=np.int64
)
"""For each byte value: how many bits are set, and which (from the lowest)."""


class Evaluation:
    def __init__(
        self,
        plan: Plan,
        arrays: Mapping[str, Any],
        rows: Rows,
        entities: Entities,
        chains: Chains,
        layout: Layout,
    ) -> None:
        self.plan = plan
        self.arrays = arrays
        self.rows = rows
        self.entities = entities
        self.chains = chains
        self.layout = layout
        self._cells: dict[tuple[str, int], Any] = {}
        self.failed_columns: list[int] = []
        self.slow_rows = np.zeros(0, dtype=np.int64)

    def run(self) -> Verdicts:
        plan, layout = self.plan, self.layout
        size = layout.size
        types = len(plan.types)
        codes = (layout.action * types + layout.ptype) * types + layout.rtype
        bucket, parts = plan.bucket_ids(codes)
        lanes = parts.lanes[bucket]
        tabled = _nonzero(lanes > 0)
        count = parts.table_count[bucket[tabled]]
        read_row = np.repeat(tabled, count)
        read = _ranges(parts.table_start[bucket[tabled]], count)
        read_column = parts.table_column[read]
        tested = _nonzero(lanes == 0)
        tests = parts.atom_count[bucket[tested]]
        atom_row = np.repeat(tested, tests)
        atom = _ranges(parts.atom_start[bucket[tested]], tests)
        atom_column = parts.atom_column[atom]
        cells = self._all_cells(np.concatenate([read_column, atom_column]), size)
        if self.failed_columns:  # a test with no vector form: its rows
            failed = self.failed_columns
            where = np.concatenate(
                [
                    read_row[np.isin(read_column, failed)],
                    atom_row[np.isin(atom_column, failed)],
                ]
            )
            self.slow_rows = layout.src[where]
        verdicts = Verdicts(size, parts)
        flat = cells.ravel()
        cell = flat[read_column * size + read_row].astype(np.int64)
        mapped = parts.table_mapped[read]
        if mapped.any():  # the bucket's own intervals, found by one search
            at = _nonzero(mapped)
            key = (read[at] << 32) + cell[at]
            local = parts.break_key.searchsorted(key, side="right") - 1
            local -= parts.break_start[read[at]]
            cell[at] = np.where(cell[at] < 0, -1, local)
        entry = parts.table_offset[read] + (cell + 1) * lanes[read_row]
        ends = np.cumsum(count)
        widths = lanes[tabled]
        if len(tabled) and widths.min() == widths.max() == 1:
            self._one_lane(verdicts, bucket[tabled], tabled, count, entry)
        else:
            for width in np.unique(widths).tolist():
                group = _nonzero(widths == width)
                self._tabled(verdicts, bucket, tabled, group, count, ends, entry, width)
        if len(tested):
            cell = flat[atom_column * size + atom_row]
            self._tested(verdicts, bucket, tested, atom, atom_row, cell)
        return verdicts

    def _one_lane(
        self,
        verdicts: Verdicts,
        b: IntArray,
        at: IntArray,
        counts: IntArray,
        entry: IntArray,
    ) -> None:
        """`_tabled` for buckets of at most 32 rules (every bucket, for most
        policy sets): one 64-bit word per read, clear below and sound above."""
        parts = verdicts.parts
        both = parts.whole[b]
        has = counts > 0
        if len(entry):
            starts = np.cumsum(counts) - counts
            found = np.bitwise_and.reduceat(parts.tables[entry], starts[has])
            both[has] = found
        clear = both.astype(np.uint32)
        sound = (both >> np.uint64(32)).astype(np.uint32)
        matched = clear & sound
        erring = clear ^ matched
        narrow = parts.narrow
        denies = matched & narrow[3][b]
        steps = matched & narrow[2][b]
        restricts = matched & narrow[1][b]
        allows = matched & narrow[0][b]
        deny, step, restrict = denies != 0, steps != 0, restricts != 0
        best = np.where(
            deny, 3, np.where(step, 2, np.where(restrict, 1, (allows != 0) - 1))
        )
        block = erring & parts.strict[b]
        win = np.where(
            deny, denies, np.where(step, steps, np.where(restrict, restricts, allows))
        )
        blocked = block != 0
        member = np.where(blocked, block | denies, win)
        verdicts.best[at] = best
        verdicts.blocking[at] = np.bitwise_count(block)
        verdicts.winners[at] = np.bitwise_count(win)
        verdicts.effect[at] = np.where(blocked | (best < 0), DENY, best)
        verdicts._tables.append((at, b, member[:, None]))

    def _tabled(
        self,
        verdicts: Verdicts,
        bucket: IntArray,
        tabled: IntArray,
        group: IntArray,
        count: IntArray,
        ends: IntArray,
        entry: IntArray,
        lanes: int,
    ) -> None:
        """Rows whose bucket has tables `lanes` lanes wide: each column read
        narrows the slots still clear and still sound (AND over columns);
        `entry` is each read's entry for lane 0 (its cell or interval,
        error first, `lanes` entries apiece)."""
        parts = verdicts.parts
        at = tabled[group]
        b = bucket[at]
        counts = count[group]
        reads = _ranges(ends[group] - counts, counts)
        first = entry[reads]
        found = parts.tables[first[:, None] + np.arange(lanes)]
        ranks = np.ascontiguousarray(parts.ranks[b][:, :, :lanes])  # row, rank, lane
        full = (ranks[:, 0] | ranks[:, 1] | ranks[:, 2] | ranks[:, 3]).astype(np.uint64)
        both = full | (full << np.uint64(32))
        has = _nonzero(counts > 0)
        if len(has):
            starts = (np.cumsum(counts) - counts)[has]
            both[has] = np.bitwise_and.reduceat(found, starts, axis=0)
        clear = (both & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        sound = (both >> np.uint64(32)).astype(np.uint32)
        matched = clear & sound
        erring = clear & ~sound
        best = np.full(len(at), -1, dtype=np.int64)
        for rank in range(4):
            best = np.where((matched & ranks[:, rank]).any(axis=1), rank, best)
        block = erring & (ranks[:, 1] | ranks[:, 2] | ranks[:, 3])
        blocking = np.bitwise_count(block).sum(axis=1, dtype=np.int64)
        win = matched & ranks[np.arange(len(at)), np.maximum(best, 0)]
        win[best < 0] = 0
        blocked = blocking > 0
        member = np.where(blocked[:, None], block | (matched & ranks[:, DENY]), win)
        verdicts.best[at] = best
        verdicts.blocking[at] = blocking
        verdicts.winners[at] = np.bitwise_count(win).sum(axis=1, dtype=np.int64)
        verdicts.effect[at] = np.where(blocked | (best < 0), DENY, best)
        verdicts._tables.append((at, b, member))

    def _tested(
        self,
        verdicts: Verdicts,
        bucket: IntArray,
        tested: IntArray,
        atom: IntArray,
        atom_row: IntArray,
        cell: npt.NDArray[np.int32],
    ) -> None:
        """Rows of big buckets: every (row, rule) pair, every test of it."""
        parts = verdicts.parts
        size = self.layout.size
        slots = np.zeros(size, dtype=np.int64)
        slots[tested] = parts.slot_count[bucket[tested]]
        pair_start = np.cumsum(slots) - slots
        pairs = int(slots.sum())
        pair_row = np.repeat(np.arange(size, dtype=np.int64), slots)
        pair_slot = _ranges(parts.slot_start[bucket[tested]], slots[tested])
        atom_pair = pair_start[atom_row] + parts.atom_slot[atom]
        err = cell < 0
        start = (cell - parts.atom_first[atom]).astype(np.uint32)
        hit = (start < parts.atom_width[atom]) != parts.atom_negated[atom]
        state = np.bincount(
            atom_pair, weights=(~hit & ~err) + 65536.0 * err, minlength=pairs
        )
        failing = (state % 65536) > 0
        erring = ~failing & (state >= 65536)
        matched = ~failing & (state == 0)
        rank = parts.slot_rank[pair_slot].astype(np.int64)
        block = erring & (rank > 0)
        blocking = np.bincount(pair_row, weights=block, minlength=size).astype(np.int64)
        counts = np.bincount(pair_row * 4 + rank, weights=matched, minlength=4 * size)
        counts = counts.reshape(size, 4)
        best = np.full(size, -1, dtype=np.int64)
        for effect in range(4):
            best = np.where(counts[:, effect] > 0, effect, best)
        winners = counts[np.arange(size), np.maximum(best, 0)].astype(np.int64)
        winners[best < 0] = 0
        blocked = blocking > 0
        member = np.where(
            blocked[pair_row],
            block | (matched & (rank == DENY)),
            matched & (rank == best[pair_row]),
        )
        verdicts.best[tested] = best[tested]
        verdicts.blocking[tested] = blocking[tested]
        verdicts.winners[tested] = winners[tested]
        effect_of = np.where(blocked | (best < 0), DENY, best)
        verdicts.effect[tested] = effect_of[tested]
        verdicts._pairs.append((pair_row, pair_slot, member))

    def _all_cells(self, column: IntArray, size: int) -> npt.NDArray[np.int32]:
        plan = self.plan
        count = len(plan.columns)
        cells = np.full((count, size), -1, dtype=np.int32)
        used = _nonzero(np.bincount(column, minlength=count))
        failed = []
        for c in used.tolist():
            spec = plan.columns[c]
            if isinstance(spec, CellSpec):
                cells[c] = self._spec_cells(spec)
                continue
            try:
                cells[c] = self._derived_cells(spec)
            except Unsupported as exc:
                log.debug("a test goes row by row: %s", exc)
                failed.append(c)
        self.failed_columns = failed
        return cells

    # ---- cells of one column over the evaluated rows

    def _source_cells(self, spec: CellSpec, key: str, data: Any) -> Any:
        memo = (key, id(spec))  # a spec's hash would walk all its constants
        found = self._cells.get(memo)
        if found is None:
            found = self._cells[memo] = _cells(spec, data, self.plan.schema)
        return found

    def _spec_cells(self, spec: CellSpec) -> npt.NDArray[np.int32]:
        layout = self.layout
        if spec.root == "context":
            name = f"context.{spec.name}"
        else:
            name = f"{spec.root}.attrs.{spec.name}"
        data = self.arrays.get(name)
        if data is None:
            out = np.full(layout.size, -1, dtype=np.int32)
        else:
            out = self._source_cells(spec, name, data)[layout.src]
        if spec.root == "principal" and len(layout.roots):
            # A root's attributes are those of its entry in `entities`.
            declares = self.plan.declares(spec)
            reading = declares[np.minimum(layout.root_type, len(declares) - 1)]
            if reading.any():
                entity = layout.root_entity[reading]
                out[layout.roots[reading]] = self.entities.cells(spec)[entity]
        return out

    def _derived_cells(self, spec: Derived) -> npt.NDArray[np.int32]:
        plan, layout = self.plan, self.layout
        out = np.full(layout.size, -1, dtype=np.int32)
        at = _nonzero(
            (layout.ptype == plan.type_code[spec.principal_type])
            & (layout.rtype == plan.type_code[spec.resource_type])
        )
        frame = Frame(
            len(at),
            layout.action[at],
            plan,
            spec.principal_type,
            spec.resource_type,
            self._reader(at, spec.principal_type, spec.resource_type),
            FrameFacts(self.chains, layout.chain[at]),
        )
        if spec.mode == "truth":
            value, err = frame.truth(spec.expr)
            out[at] = np.where(err, -1, value.astype(np.int32))
        else:
            _, err = frame.eval(spec.expr)
            out[at] = np.where(err, -1, 1)
        return out

    def _reader(
        self, at: IntArray, ptype: str, rtype: str
    ) -> Callable[[str, str], Column]:
        schema = self.plan.schema
        layout = self.layout
        cache: dict[tuple[str, str], Column] = {}

        def read(root: str, name: str) -> Column:
            found = cache.get((root, name))
            if found is not None:
                return found
            if root == "context":
                spec = schema.context.get(name)
                column_name = f"context.{name}"
            else:
                owner = ptype if root == "principal" else rtype
                spec = schema.entities[owner].attrs.get(name)
                column_name = f"{root}.attrs.{name}"
            if spec is None:
                raise Unsupported(f"`{root}.{name}` is not declared here")
            data = self.arrays.get(column_name)
            own = data[layout.src[at]] if data is not None else len(at)
            if root == "principal" and layout.is_root[at].any():
                roots = layout.is_root[at]
                source = self.entities.attr(name)
                mine = (
                    data[layout.src[at[~roots]]]
                    if data is not None
                    else int((~roots).sum())
                )
                theirs = source[layout.entity[at[roots]]]
                merged = _concat([mine, theirs])
                order = np.concatenate([_nonzero(~roots), _nonzero(roots)])
                own = merged[np.argsort(order, kind="stable")]
            if isinstance(own, int):
                column = Column(
                    "none", None, np.ones(own, dtype=bool), np.zeros(own, dtype=bool)
                )
            else:
                column = _typed_column(own, spec.type, schema)
            cache[(root, name)] = column
            return column

        return read
