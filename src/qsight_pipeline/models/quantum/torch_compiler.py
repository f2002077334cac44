"""The torch executor's compiler: the head's qiskit circuit as a short plan of batched tensor
operations (``Plan(spec)``). Steps 1-4 of :mod:`.torch_executor`'s description happen here; the
executor (the runtime) only applies the plan to a batch of angles and weights.

The executor imports only the names in ``__all__``, this module's public interface: the plan
(:class:`Plan`) and the step types it holds (:class:`Program`, :class:`GateRef`, :class:`Block`,
:class:`Layer`), :func:`sympy_to_torch` for the angle expressions, and the constants the runtime
shares with the compiler (:data:`CONSTANT_1Q`, :data:`SQRT_HALF`,
:data:`MAX_SHOT_SAMPLES_PER_CHUNK`). Everything with a leading underscore is the compiler's own.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy
import torch

from .circuit import QuantumCircuitSpec

__all__ = [
    "BASIS_GATES",
    "CONSTANT_1Q",
    "MAX_SHOT_SAMPLES_PER_CHUNK",
    "SQRT_HALF",
    "Block",
    "GateRef",
    "Layer",
    "Plan",
    "Program",
    "sympy_to_torch",
]

logger = logging.getLogger(__name__)

BASIS_GATES: tuple[str, ...] = ("rx", "ry", "rz", "p", "h", "x", "cx")
_ROTATIONS = ("rx", "ry", "rz", "p")  # one angle each; same-axis rotations add up
_COMPLEX_GATES = ("rx", "rz", "p")
_DIAGONAL_1Q = ("rz", "p")
_PERMUTATION_1Q = ("x",)
CONSTANT_1Q = ("h", "x")
_MAX_GROUP_QUBITS = 5
MAX_SHOT_SAMPLES_PER_CHUNK = 1 << 22
SQRT_HALF = 1.0 / math.sqrt(2.0)


# ----------------------------------------------------------------------------- gate list


@dataclass
class _Gate:
    kind: str
    qubits: tuple[int, ...]
    expr: Any = None  # sympy expression of the angle, or None

    @property
    def is_single(self) -> bool:
        return len(self.qubits) == 1

    @property
    def is_phase_or_permutation(self) -> bool:
        return self.kind in ("cx", *_DIAGONAL_1Q, *_PERMUTATION_1Q)


def _load_gates(spec: QuantumCircuitSpec) -> tuple[list[_Gate], dict[Any, int]]:
    """Transpile the spec's circuit to ``BASIS_GATES`` and read it as a gate list.

    Returns the gates and the map from sympy symbol to variable index (inputs first, then
    weights, in the spec's order).
    """
    # lazy: optional dependency
    from qiskit import transpile

    circuit = transpile(spec.circuit, basis_gates=list(BASIS_GATES), optimization_level=0)
    if circuit.num_qubits != spec.num_qubits:
        raise RuntimeError("Transpiling the quantum head's circuit changed its width")
    symbols = {
        sympy.Symbol(param.name): index
        for index, param in enumerate((*spec.input_params, *spec.weight_params))
    }
    gates: list[_Gate] = []
    for instruction in circuit.data:
        operation = instruction.operation
        name = operation.name
        if name == "barrier":
            continue
        if name not in BASIS_GATES:
            raise NotImplementedError(
                f"The torch executor cannot run gate {name!r}; transpiling to {BASIS_GATES} "
                "should have removed it"
            )
        qubits = tuple(circuit.find_bit(qubit).index for qubit in instruction.qubits)
        expr = None
        if operation.params:
            (param,) = operation.params
            expr = param.sympify() if hasattr(param, "sympify") else sympy.Float(float(param))
            unknown = expr.free_symbols - set(symbols)
            if unknown:
                raise RuntimeError(f"Circuit parameter(s) {unknown} are neither inputs nor weights")
        gates.append(_Gate(name, qubits, expr))
    return gates, symbols


def _per_qubit_queues(gates: list[_Gate], n_qubits: int) -> list[deque[int]]:
    queues: list[deque[int]] = [deque() for _ in range(n_qubits)]
    for index, gate in enumerate(gates):
        for qubit in gate.qubits:
            queues[qubit].append(index)
    return queues


def _merge_rotations(gates: list[_Gate], n_qubits: int) -> list[_Gate]:
    """Merge back-to-back rotations about the same axis on a qubit (angles add)."""
    merged: list[_Gate | None] = list(gates)
    last_on_qubit: list[int | None] = [None] * n_qubits
    for index, gate in enumerate(gates):
        if gate.is_single and gate.kind in _ROTATIONS:
            previous = last_on_qubit[gate.qubits[0]]
            prior = merged[previous] if previous is not None else None
            if prior is not None and prior.is_single and prior.kind == gate.kind:
                merged[previous] = _Gate(prior.kind, prior.qubits, prior.expr + gate.expr)
                merged[index] = None
                continue
        for qubit in gate.qubits:
            last_on_qubit[qubit] = index
    return [gate for gate in merged if gate is not None]


# ----------------------------------------------------------------------------- angle programs


@dataclass
class _LinearForm:
    """``const + sum(coeff * prod(variables))`` over monomials (tuples of variable indices)."""

    terms: dict[tuple[int, ...], float] = field(default_factory=dict)
    const: float = 0.0


class _Variables:
    """Maps sympy expressions to linear forms over monomials of the variables.

    Variables ``0..n_inputs-1`` are the inputs, then the weights; a non-polynomial expression
    becomes an extra (pseudo) variable computed by :func:`sympy_to_torch`.
    """

    def __init__(self, symbols: dict[Any, int], n_inputs: int) -> None:
        self.symbols = symbols
        self.n_inputs = n_inputs
        self.n_base = len(symbols)
        self.pseudo: list[Any] = []  # non-polynomial expressions, in pseudo-variable order

    def form(self, expr: Any) -> _LinearForm:
        expr = sympy.expand(expr)
        symbols = sorted(expr.free_symbols, key=lambda s: self.symbols[s])
        if not symbols:
            return _LinearForm({}, float(expr))
        if expr.is_polynomial(*symbols):
            poly = sympy.Poly(expr, *symbols)
            result = _LinearForm()
            for exponents, coeff in poly.terms():
                monomial = tuple(
                    index
                    for symbol, power in zip(symbols, exponents, strict=True)
                    for index in [self.symbols[symbol]] * power
                )
                if monomial:
                    result.terms[monomial] = result.terms.get(monomial, 0.0) + float(coeff)
                else:
                    result.const += float(coeff)
            return result
        self.pseudo.append(expr)
        return _LinearForm({(self.n_base + len(self.pseudo) - 1,): 1.0}, 0.0)

    def depends_on_inputs(self, form: _LinearForm) -> bool:
        return any(index < self.n_inputs or index >= self.n_base for m in form.terms for index in m)


class Program:
    """Evaluates ``K`` outputs that are linear in the monomials of the variables.

    ``outputs = const + monomials(V) @ coeffs``, computed with one gather (and one product per
    extra degree) per monomial degree and a single matrix product, or just a gather when every
    output is one variable.
    """

    def __init__(self, forms: list[_LinearForm], post: np.ndarray | None, offset: int) -> None:
        # ``offset`` shifts variable indices (the shared programs see the weights only).
        monomials = sorted({m for form in forms for m in form.terms}, key=lambda m: (len(m), m))
        coeffs = np.zeros((len(monomials), len(forms)))
        const = np.array([form.const for form in forms], dtype=float)
        row = {m: i for i, m in enumerate(monomials)}
        for column, form in enumerate(forms):
            for monomial, value in form.terms.items():
                coeffs[row[monomial], column] += value
        if post is not None:  # e.g. per-gate angles -> per-basis-state phases
            coeffs, const = coeffs @ post, const @ post
        self.n_outputs = coeffs.shape[1]
        self.by_degree: list[np.ndarray] = []  # (degree, count) variable indices
        for degree in sorted({len(m) for m in monomials}):
            chosen = [m for m in monomials if len(m) == degree]
            self.by_degree.append(np.array(chosen, dtype=np.int64).T - offset)
        self.selection: np.ndarray | None = None
        is_selection = (
            post is None
            and all(len(m) == 1 for m in monomials)
            and not const.any()
            and np.array_equal(np.sort(coeffs, axis=0)[-1], np.ones(coeffs.shape[1]))
            and np.count_nonzero(coeffs) == coeffs.shape[1]
        )
        if is_selection:
            chosen = np.array([monomials[i][0] for i in coeffs.argmax(axis=0)], dtype=np.int64)
            self.selection = chosen - offset
        self.coeffs = coeffs
        self.const = const if const.any() else None

    def materialise(self, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        def as_index(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=torch.long, device=device)

        return {
            "selection": None if self.selection is None else as_index(self.selection),
            "by_degree": [as_index(indices) for indices in self.by_degree],
            "coeffs": torch.as_tensor(self.coeffs, dtype=dtype, device=device),
            "const": None
            if self.const is None
            else torch.as_tensor(self.const, dtype=dtype, device=device),
        }

    @staticmethod
    def evaluate(constants: dict[str, Any], variables: torch.Tensor) -> torch.Tensor:
        if constants["selection"] is not None:
            return variables.index_select(1, constants["selection"])
        parts = []
        for indices in constants["by_degree"]:
            monomial = variables.index_select(1, indices[0])
            for extra in indices[1:]:
                monomial = monomial * variables.index_select(1, extra)
            parts.append(monomial)
        if not parts:  # constant angles (e.g. from transpiling sx)
            out = variables.new_zeros(variables.shape[0], constants["coeffs"].shape[1])
        else:
            monomials = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
            out = monomials @ constants["coeffs"]
        if constants["const"] is not None:
            out = out + constants["const"]
        return out


_SYMPY_FUNCTIONS = {
    "sin": torch.sin,
    "cos": torch.cos,
    "tan": torch.tan,
    "exp": torch.exp,
    "log": torch.log,
    "asin": torch.asin,
    "acos": torch.acos,
    "atan": torch.atan,
    "sinh": torch.sinh,
    "cosh": torch.cosh,
    "tanh": torch.tanh,
    "Abs": torch.abs,
}


def sympy_to_torch(expr: Any, variables: torch.Tensor, symbols: dict[Any, int]) -> Any:
    """Evaluate a sympy expression with torch ops; symbols index columns of ``variables``."""
    if expr.is_Symbol:
        return variables[:, symbols[expr]]
    if expr.is_Number or expr in (sympy.pi, sympy.E):
        return float(expr)
    args = [sympy_to_torch(arg, variables, symbols) for arg in expr.args]
    if expr.is_Add:
        total = args[0]
        for arg in args[1:]:
            total = total + arg
        return total
    if expr.is_Mul:
        product = args[0]
        for arg in args[1:]:
            product = product * arg
        return product
    if expr.is_Pow:
        return args[0] ** args[1]
    name = type(expr).__name__
    if name in _SYMPY_FUNCTIONS:
        (arg,) = args
        arg = arg if isinstance(arg, torch.Tensor) else variables.new_tensor(arg)
        return _SYMPY_FUNCTIONS[name](arg)
    raise NotImplementedError(f"The torch executor cannot evaluate {name} in angle {expr}")


# ----------------------------------------------------------------------------- plan


@dataclass
class GateRef:
    """Where a single-qubit gate's 2x2 matrix comes from at run time."""

    kind: str
    batched: bool = False  # angle depends on the inputs -> one matrix per sample
    column: int = -1  # column in the (batched, kind) angle program's output


@dataclass
class _Prefix:
    columns: list[list[GateRef]] | None  # vectorised over qubits, or None -> per qubit
    per_qubit: list[list[GateRef]]


@dataclass
class Block:
    """A phase/permutation block: ``state[:, gather] * exp(i * phase)``."""

    gather: np.ndarray | None  # new_state = state[:, gather]
    phase_program: int | None  # index into plan.phase_programs
    phase_batched: bool = False


@dataclass
class Layer:
    """A layer of single-qubit gates, grouped into blocks of adjacent qubits."""

    groups: list[tuple[int, int, list[list[GateRef]]]]  # (first qubit, width, gates per qubit)


class Plan:
    """Everything the executor precomputes from the circuit (device-independent)."""

    def __init__(self, spec: QuantumCircuitSpec) -> None:
        self.n_qubits = n = spec.num_qubits
        self.n_weights = spec.num_weights
        gates, symbols = _load_gates(spec)
        gates = _merge_rotations(gates, n)
        self.symbols = symbols
        self.variables = _Variables(symbols, n_inputs=n)
        self.is_complex = any(gate.kind in _COMPLEX_GATES for gate in gates)
        self.dim = 1 << n
        basis = np.arange(self.dim)
        self.bits = (basis[:, None] >> np.arange(n)[None, :]) & 1  # (2**n, n)

        # Angles of parametrised single-qubit gates: forms per (batched, kind).
        self.angle_forms: dict[tuple[bool, str], list[_LinearForm]] = {}
        self.phase_forms: list[tuple[list[_LinearForm], np.ndarray]] = []
        self.phase_batched: list[bool] = []

        queues = _per_qubit_queues(gates, n)
        prefix = [self._take_prefix(gates, queues[q]) for q in range(n)]
        self.prefix = self._vectorise_prefix(prefix)
        self.steps = self._schedule(gates, queues)
        readout_gather = np.arange(self.dim)
        if self.steps and isinstance(self.steps[-1], Block):
            # |state[:, g]|^2 @ signs == |state|^2 @ signs[inverse(g)]: fold the last block.
            last = self.steps.pop()
            readout_gather = np.argsort(last.gather) if last.gather is not None else readout_gather
            if last.phase_program is not None:
                self.phase_forms.pop()
                self.phase_batched.pop()
        self.signs = (1 - 2 * self.bits)[readout_gather].astype(float)  # (2**n, n)

        offset = n  # shared programs see only the weights
        self.angle_programs = {
            key: Program(forms, None, 0 if key[0] else offset)
            for key, forms in self.angle_forms.items()
        }
        self.phase_programs = [
            Program(forms, masks, 0 if batched else offset)
            for (forms, masks), batched in zip(self.phase_forms, self.phase_batched, strict=True)
        ]
        # Pseudo variables (non-polynomial angles) are computed per sample from all variables.
        self.pseudo = list(self.variables.pseudo)

    # -- gate references

    def _ref(self, gate: _Gate) -> GateRef:
        if gate.kind in CONSTANT_1Q:
            return GateRef(gate.kind)
        form = self.variables.form(gate.expr)
        batched = self.variables.depends_on_inputs(form)
        forms = self.angle_forms.setdefault((batched, gate.kind), [])
        forms.append(form)
        return GateRef(gate.kind, batched, len(forms) - 1)

    def _take_prefix(self, gates: list[_Gate], queue: deque[int]) -> list[GateRef]:
        refs = []
        while queue and gates[queue[0]].is_single:
            refs.append(self._ref(gates[queue.popleft()]))
        return refs

    def _vectorise_prefix(self, prefix: list[list[GateRef]]) -> _Prefix:
        depth = len(prefix[0])
        same_shape = all(
            len(refs) == depth
            and all(
                (r.kind, r.batched) == (prefix[0][k].kind, prefix[0][k].batched)
                for k, r in enumerate(refs)
            )
            for refs in prefix
        )
        columns = [[refs[k] for refs in prefix] for k in range(depth)] if same_shape else None
        return _Prefix(columns, prefix)

    # -- scheduling of the remaining gates into blocks and layers

    def _schedule(self, gates: list[_Gate], queues: list[deque[int]]) -> list[Block | Layer]:
        def ready() -> list[int]:
            fronts = {queue[0] for queue in queues if queue}
            return sorted(
                index for index in fronts if all(queues[q][0] == index for q in gates[index].qubits)
            )

        steps: list[Block | Layer] = []
        mode = None
        pending: list[_Gate] = []
        while True:
            available = ready()
            if not available:
                break
            fits = [
                i
                for i in available
                if (mode == "block" and gates[i].is_phase_or_permutation)
                or (mode == "layer" and gates[i].is_single)
            ]
            if not fits:
                if pending:
                    steps.append(self._make_step(mode, pending))
                    pending = []
                # Prefer a block when any two-qubit gate is ready: it can absorb diagonal gates.
                mode = "block" if any(not gates[i].is_single for i in available) else "layer"
                if mode == "block" and not any(gates[i].is_phase_or_permutation for i in available):
                    raise NotImplementedError("Only cx is supported as a two-qubit gate")
                continue
            for i in fits:
                for qubit in gates[i].qubits:
                    queues[qubit].popleft()
                pending.append(gates[i])
        if pending:
            steps.append(self._make_step(mode, pending))
        return steps

    def _make_step(self, mode: str | None, gates: list[_Gate]) -> Block | Layer:
        return self._make_block(gates) if mode == "block" else self._make_layer(gates)

    def _make_block(self, gates: list[_Gate]) -> Block:
        # Output frame: new_state[b] = exp(i * phase[b]) * state[gather[b]].
        gather = np.arange(self.dim)
        masks: list[np.ndarray] = []
        forms: list[_LinearForm] = []
        for gate in gates:
            if gate.kind in ("cx", "x"):
                target = gate.qubits[-1]
                active = self.bits[:, gate.qubits[0]] == 1 if gate.kind == "cx" else True
                flip = np.where(active, 1 << target, 0)
                permutation = np.arange(self.dim) ^ flip  # an involution
                gather = gather[permutation]
                masks = [mask[permutation] for mask in masks]
            else:  # p or rz: diagonal phase angle * mask
                bit = self.bits[:, gate.qubits[0]].astype(float)
                mask = bit if gate.kind == "p" else bit - 0.5
                masks.append(mask)
                forms.append(self.variables.form(gate.expr))
        identity = np.array_equal(gather, np.arange(self.dim))
        if not forms:
            return Block(None if identity else gather, None)
        batched = any(self.variables.depends_on_inputs(form) for form in forms)
        self.phase_forms.append((forms, np.stack(masks)))
        self.phase_batched.append(batched)
        return Block(None if identity else gather, len(self.phase_forms) - 1, batched)

    def _make_layer(self, gates: list[_Gate]) -> Layer:
        per_qubit: dict[int, list[GateRef]] = {}
        for gate in gates:
            per_qubit.setdefault(gate.qubits[0], []).append(self._ref(gate))
        n = self.n_qubits
        n_groups = math.ceil(n / _MAX_GROUP_QUBITS)
        bounds = np.linspace(0, n, n_groups + 1).round().astype(int)
        groups = []
        for first, stop in zip(bounds[:-1], bounds[1:], strict=True):
            members = [per_qubit.get(q, []) for q in range(first, stop)]
            if any(members):
                groups.append((int(first), int(stop - first), members))
        return Layer(groups)
