"""Batch replay over columnar data: many requests decided in a few numpy passes.

**Input** is a mapping of columns, one entry per request (a row), named after
the request contract: `action`, `principal.type`, `principal.id`,
`principal.attrs.NAME`, `resource.type`, `resource.id`, `resource.attrs.NAME`,
`context.NAME`, the principal's inline owner as `owner.type` and `owner.id`,
and `now` (RFC 3339 text, or `datetime64` read as UTC). A column is a numpy
array (typed, or objects), a masked array, or a `Coded` column (dictionary
encoded: codes into a small array of values, as parquet and arrow keep
repeated strings; a pandas `Categorical` reads the same way). A missing
value is `None` in an object column, NaN in a float column, NaT, a masked
entry, or code -1. `delegation` (the chain) and `entities` are either object
columns holding each row's list of mappings (or None), or `Ragged` columns:
the flat layout of an arrow `list<struct>` column, row i holding records
`offsets[i]:offsets[i + 1]` of one flat array per field, fields named by their
dotted path (`from.type`, `attrs.team`; a link's `scopes` is a `Ragged` of
names under the field name ""). `requests_to_columns` writes this layout, as
a decision log would keep it. The older `owner.attrs.NAME` and `owner.present`
columns still describe the owner's entry in `entities`.

**Output**: `ColumnResult.effects` holds effect codes (`ir.EFFECT_ORDER`:
0 allow … 3 deny). The rules that made the decisions are kept as compressed
rows: row i's rules are `rule_ids[k]` for each k in
`rule_index[rule_offsets[i]:rule_offsets[i + 1]]`, in id order, exactly as
`Decision.rule_ids` lists them. `rules_of(i)` reads one row, `rules` builds a
tuple for every row, and `reason_codes(i)` gives the reason codes `decide`
would give (a failed chain lists each failed check, in `check_chain`'s order).

**How.** What `decide` checks before any rule runs is done over whole
columns: the request's shape, every check of the delegation chain, the
declared scopes of every identity type the row acts through (its
principal's, and its chain's members or, with no chain, its owners' up to
the first human: one `scope_not_declared` each, after the chain's reasons),
and the root whose decision caps the principal's (the chain's first grantor,
or the human found by following owners through `entities`). Ids compare as
64-bit hashes, once the batch is seen to hold no two different ids with one
hash (else every row goes one by one). Each row, and each root of a row, is
an *evaluated row* of the bucket the compiled tree dispatches it to (action,
principal type, resource type). A test of an attribute against a constant
reads the value's *cell*: the constants all rules compare that attribute
with, sorted, cut its values into cells, and each value is put in its cell
once per batch, exactly (integers as integers, a float as
`Decimal(repr(x))`, the way a single request reads it). Any other test
(`or`, `not`, `has`, delegation facts, obligations read from the request) is
evaluated, three-valued, once per batch for each principal and resource type
it meets, and has the cells false, true and error. A bucket of up to 256
rules keeps, per attribute it reads and per cell (or, when that table would
be too big, per interval of its own tests), bit masks of the rules the value
leaves "clear" (not false) and "sound" (not error); an evaluated row ANDs
one mask pair per attribute, and its matches are what is clear and sound.
Bigger buckets are evaluated (row, rule) pair by pair. Matches and errors
combine as `decision.combine` does, and the root's result caps the
principal's as `engine.decide_parsed` does.

**Time.** A row without `now` is decided at `engine.now()`, read once per
batch (when the batch starts), as a single `decide` reads the engine's
clock once per call: with a clock that moves, two rows of one batch share
one instant where two calls of `decide` would not. Rows that go one by one
read the clock in their own `decide`.

Rows the vectorized path cannot take are decided one by one with
`Engine.decide`, so every row agrees with `decide`: bad requests, malformed
links, a chain with limits on a link (or with no `now` when the engine has
no timezone-aware `now()`), a principal or resource that is also listed in
`entities`, a resource that is the principal or its root, and rows whose
bucket holds a test with no vector form (arithmetic, `principal.owner.…`,
`delegation.root.…`, sets, `matches`).

**Layout.** One module per stage, each importing only the ones before it:
`columns` (reading and typing input columns) → `records` (requests to
columns and a row back) → `cells` → `plan` (a policy set as arrays) →
`frame` (tests with no cell form) → `rows` (the request's shape,
`entities`) → `chains` (delegation) → `roots` (roots and declared scopes)
→ `evaluate` (rules over evaluated rows) → `result` → `replay`
(`decide_columns`). This package re-exports their public names, so
`ripl.batch.X` is where callers find them; the plan's knobs
(`TABLE_WORDS`, the plan cache) are read in `ripl.batch.plan`.
"""

from __future__ import annotations

from ripl.batch.cells import Bounds, CellSpec
from ripl.batch.chains import Chains, FrameFacts
from ripl.batch.columns import (
    MAX_ID_LENGTH,
    NO_CODE,
    BoolArray,
    Coded,
    Hashes,
    IntArray,
    Ragged,
    Text,
    Unsupported,
    Vec,
    Vocabulary,
)
from ripl.batch.evaluate import Evaluation, Layout, Verdicts
from ripl.batch.frame import Column, Frame
from ripl.batch.plan import (
    DENY,
    EFFECTS,
    MAX_DENSE_BUCKETS,
    MAX_LANES,
    RESTRICT,
    TABLE_WORDS,
    BucketArrays,
    Derived,
    Part,
    Plan,
    plan_for,
)
from ripl.batch.records import request_of_row, requests_to_columns
from ripl.batch.replay import MIN_GROUP, Deciding, decide_columns
from ripl.batch.result import ColumnResult
from ripl.batch.roots import Roots
from ripl.batch.rows import Entities, Rows

__all__ = [
    "BoolArray",
    "Bounds",
    "BucketArrays",
    "CellSpec",
    "Chains",
    "Coded",
    "Column",
    "ColumnResult",
    "DENY",
    "Deciding",
    "Derived",
    "EFFECTS",
    "Entities",
    "Evaluation",
    "Frame",
    "FrameFacts",
    "Hashes",
    "IntArray",
    "Layout",
    "MAX_DENSE_BUCKETS",
    "MAX_ID_LENGTH",
    "MAX_LANES",
    "MIN_GROUP",
    "NO_CODE",
    "Part",
    "Plan",
    "RESTRICT",
    "Ragged",
    "Roots",
    "Rows",
    "TABLE_WORDS",
    "Text",
    "Unsupported",
    "Vec",
    "Verdicts",
    "Vocabulary",
    "decide_columns",
    "plan_for",
    "request_of_row",
    "requests_to_columns",
]
