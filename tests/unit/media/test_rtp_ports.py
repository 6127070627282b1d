"""RTP port allocator: even RTP ports, RTCP on +1, FIFO reuse only after release."""

from __future__ import annotations

import pytest

from switchboard.media.ports import PortAllocator, PortsExhausted


def test_even_ports_fifo_reuse_after_release() -> None:
    alloc = PortAllocator(20001, 20010)  # odd start rounds up; last pair must fit
    ports = [alloc.allocate() for _ in range(4)]
    assert ports == [20002, 20004, 20006, 20008]
    assert all(p % 2 == 0 for p in ports)
    with pytest.raises(PortsExhausted):
        alloc.allocate()
    alloc.release(20004)
    alloc.release(20002)
    assert alloc.allocate() == 20004  # released first, reused first
    assert alloc.in_use == 3 and alloc.free == 1


def test_released_port_goes_behind_the_others() -> None:
    alloc = PortAllocator(30000, 30009)
    a = alloc.allocate()
    alloc.release(a)
    assert [alloc.allocate() for _ in range(4)] == [30002, 30004, 30006, 30008]
    assert alloc.allocate() == a


def test_release_of_unknown_port_is_an_error_and_changes_nothing() -> None:
    alloc = PortAllocator(30000, 30009)
    with pytest.raises(ValueError):
        alloc.release(30000)
    assert alloc.free == 5


def test_bad_range() -> None:
    with pytest.raises(ValueError):
        PortAllocator(40000, 40000)


def test_a_released_port_is_queued_as_the_allocators_own_number() -> None:
    # The caller's int (from getsockname() during a load) waiting in the free queue kept
    # the memory page it was made in resident after the load: tracemalloc found 1,310 of
    # them per node, next to the journal's records, after a bench/platform-load run.
    alloc = PortAllocator(20000, 20009)
    ours = alloc.allocate()
    theirs = int(str(ours))  # an equal number, another object
    assert theirs == ours and theirs is not ours
    alloc.release(theirs)
    queued = list(alloc._free)[-1]
    assert queued == ours and queued is ours
