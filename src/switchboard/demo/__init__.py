"""``switchboard up --demo``: the carrier simulator (:mod:`~switchboard.demo.carrier`) and
the short mix of calls it answers (:mod:`~switchboard.demo.calls`)."""
