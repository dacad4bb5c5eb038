"""The parts the lab, the faults, the bench and the check compose: child processes, run metadata
and the result store. The service never imports this package."""
