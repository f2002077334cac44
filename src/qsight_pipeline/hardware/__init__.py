"""The trained quantum head on device snapshots and real IBM Quantum devices (Kedro-free).

- ``devices``: snapshot lookup, transpilation, the active-qubit reduction, noise model, cost;
- ``estimation``: the runtime's estimator calls, readout mitigation and zero-noise extrapolation;
- ``evaluate``: every configured condition into one tidy table;
- ``summary``: the summary with its headline, and the figures;
- ``runtime``: the same evaluation on a real device through ``QiskitRuntimeService`` (``Batch``).

Nothing here is imported at package import: qiskit loads when a function runs.
"""
