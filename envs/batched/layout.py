"""Memory layout of the batched state: per instance, one float64 row and one int32 row.

Every per-instance array of the batch (device state, the task and job tables, the event heap,
the queue, the episode's shape table, the random buffers) is a segment of its instance's row of
one of two arenas: ``F`` (B, LF) float64 and ``I`` (B, LI) int32 (booleans as 0/1). The
compiled dynamics take the two rows of an instance and index them at offsets held in one small
int64 array, ``L``, at the ``LD_*`` / ``LF_*`` / ``LI_*`` positions below. So a call between
compiled functions passes five arrays (a namedtuple of fifty arrays costs about half a
microsecond per call in reference counting), an instance's state is contiguous in memory, and
the whole batch crosses to a device as two arrays.

Segment shapes are written in terms of the dimensions: N tasks (N1 = N + 1 with the padding
row), J jobs, S task shapes, NC DAG edges, H heap entries, Q queue slots, K, V, D, M, T of the
scenario (VD = V * D, MD = M * D, KT = 5 + 2 * VD the shape-table row), NB and FB random-buffer
lengths. The scalars of an instance come first in each row (``dynamics.NOW``, ...,
``dynamics.C_ARRIVED``, ...).
"""

from __future__ import annotations

#: float64 segments: name, shape (the Python views have shape (B, *shape)).
F_SEGMENTS = (
    ("sf", ("NSF",)),          # float scalars
    ("dbusy", ("D",)),         # device busy until (== the time it last became idle)
    ("dmem", ("D",)),          # memory used by resident variants (GB)
    ("dbtime", ("D",)),        # accumulated busy seconds
    ("lastuse", ("MD",)),      # last use of a resident variant (LRU), at m * D + d
    ("ttimes", ("N1", 4)),     # arrival, deadline, priority, SLO per task (+ the padding row)
    ("tready", ("N",)),        # time the task became ready
    ("tfin", ("N",)),          # completion or drop time
    ("tacc", ("N",)),          # accuracy of the serving variant
    ("jarr", ("J",)),          # job arrival
    ("jfin", ("J",)),          # time the job's last task finished
    ("ht", ("H",)),            # event heap: time
    ("ktab", ("S", "KT")),     # per shape: size, size2, min accuracy, cap, n | exec (VD) | load (VD)
    ("kideal", ("S",)),        # ideal service time of the shape
    ("noise", ("NB",)),        # service-noise normals, consumed in order
    ("fexp", ("FB",)),         # failure-stream standard exponentials, consumed in order
    ("free_at", ("D",)),       # scratch of the encoding
)
#: int32 segments.
I_SEGMENTS = (
    ("si", ("NSI",)),          # int scalars and counters
    ("dup", ("D",)),           # device up
    ("didle", ("D",)),         # device has no task (failed devices count as idle)
    ("dtask", ("D",)),         # task running on the device, -1 if none
    ("resident", ("MD",)),     # variant m resident on device d, at m * D + d
    ("idle_type", ("T",)),     # idle, up devices per type
    ("gdev", ("D",)),          # scratch: devices of a gang assignment
    ("tkind", ("N1",)),        # shape row per task (padding row: 0)
    ("tstate", ("N",)),        # PENDING, QUEUED, RUNNING, DONE, DROPPED
    ("tjob", ("N",)),          # job of each task
    ("tpend", ("N",)),         # unfinished parent stages
    ("treq", ("N",)),          # requeues (the attempt number carried by FINISH events)
    ("tvar", ("N",)),          # serving variant (-1: none)
    ("cptr", ("N1",)),         # children of task t: cidx[cptr[t]:cptr[t + 1]]
    ("cidx", ("NC",)),
    ("jfirst", ("J",)),        # first task id of each job
    ("jcount", ("J",)),        # tasks (stages) of each job
    ("jrem", ("J",)),          # tasks not finished yet
    ("jdrop", ("J",)),         # some task was dropped (the job failed)
    ("queue", ("Q",)),         # ready task ids in queue order
    ("arrived", ("N",)),       # task ids in arrival order
    ("hseq", ("H",)),          # event heap: sequence number,
    ("hkind", ("H",)),         # kind,
    ("hpay", ("H",)),          # payload (task or device),
    ("hext", ("H",)),          # extra (the attempt of a FINISH)
    ("kstat", ("S", "VD")),    # the (variant slot, device) pair can ever serve the shape
    ("kres", ("S", "VD")),     # index into resident of each pair
    ("kdev", ("S", "D")),      # some variant slot can serve the shape on the device
    ("ids", ("K",)),           # scratch: window task ids
    ("avail", ("D",)),         # scratch of the encoding
)
#: Dimensions held in L (positions LD_*).
DIMS = ("N", "N1", "J", "S", "KT", "H", "Q", "NB", "FB", "NC")

(LD_N, LD_N1, LD_J, LD_S, LD_KT, LD_H, LD_Q, LD_NB, LD_FB, LD_NC) = range(10)
(LF_SF, LF_DBUSY, LF_DMEM, LF_DBTIME, LF_LASTUSE, LF_TTIMES, LF_TREADY, LF_TFIN, LF_TACC, LF_JARR, LF_JFIN,
 LF_HT, LF_KTAB, LF_KIDEAL, LF_NOISE, LF_FEXP, LF_FREE_AT) = range(10, 27)
(LI_SI, LI_DUP, LI_DIDLE, LI_DTASK, LI_RESIDENT, LI_IDLE_TYPE, LI_GDEV, LI_TKIND, LI_TSTATE, LI_TJOB, LI_TPEND,
 LI_TREQ, LI_TVAR, LI_CPTR, LI_CIDX, LI_JFIRST, LI_JCOUNT, LI_JREM, LI_JDROP, LI_QUEUE, LI_ARRIVED, LI_HSEQ,
 LI_HKIND, LI_HPAY, LI_HEXT, LI_KSTAT, LI_KRES, LI_KDEV, LI_IDS, LI_AVAIL) = range(27, 57)
NL = 57
assert LF_SF == len(DIMS) and LI_SI == LF_SF + len(F_SEGMENTS) and NL == LI_SI + len(I_SEGMENTS)


def segment_sizes(segments, dims: dict[str, int]) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, shape, offset) of each segment of an arena for the given dimensions."""
    out, off = [], 0
    for name, shape in segments:
        shp = tuple(dims[s] if isinstance(s, str) else s for s in shape)
        size = 1
        for n in shp:
            size *= n
        out.append((name, shp, off))
        off += size
    return out
