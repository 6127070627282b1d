"""Room for a process's sockets, made before it serves: the descriptor limit and table.

A media node opens two sockets per call leg (RTP and RTCP), so at 150 calls/s of 3 s
calls it holds ~2,000 descriptors, up to one per port of its RTP range. Two things about
that are better settled at start than under calls:

* The soft ``RLIMIT_NOFILE``: systemd and most shells start processes with 1,024, which
  a node reaches at ~500 legs (``socket()`` then fails with EMFILE and the call with it).
  The soft limit is raised towards what the node needs, up to the hard limit (which an
  unprivileged process may do; ``LimitNOFILE=`` in a unit raises the hard one).
* Linux's descriptor table grows by doubling (64, 128, ..., 4,096) when a descriptor
  past its end is allocated, and in a process with more than one thread each growth
  waits for an RCU grace period (``expand_files`` → ``synchronize_rcu``) with the caller
  blocked in ``socket()``: 5-15 ms each on a busy 2-core machine, five times while a
  node's first few hundred calls arrive, on the event loop's thread (seen with
  ``perf record -e sched:sched_switch -g``: the only uninterruptible waits of a loaded
  node's loop thread). The table never shrinks, so one descriptor duplicated to the top
  of the expected range at start, and closed again, grows it once, before anything waits.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import resource

log = logging.getLogger(__name__)


def reserve(needed: int) -> int:
    """Raise the soft descriptor limit towards ``needed`` (capped at the hard limit) and
    grow the descriptor table to hold that many; returns the size reserved (0: none)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            log.info("descriptor limit raised from %d to %d", soft, new)
            soft = new
        except (ValueError, OSError) as exc:
            log.warning("descriptor limit %d not raised to %d: %s", soft, new, exc)
    top = needed if soft == resource.RLIM_INFINITY else min(needed, soft)
    if top < 2:
        return 0
    fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            # the lowest free descriptor >= top - 1 (F_DUPFD, never one in use, unlike
            # dup2): the table grows to hold it
            high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, top - 1)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EMFILE):
                log.warning("descriptor table not grown to %d: %s", top, exc)
                return 0
            # every descriptor from top - 1 to the limit is in use: the table holds them
        else:
            os.close(high)
    finally:
        os.close(fd)
    return top
