"""What one device runs per step, read from a compiled HLO module's text where XLA's own cost
analysis falls short: library calls it leaves unpriced (cuBLAS GEMMs, cuDNN fused attention,
Pallas splash attention) and while loops, whose body it counts once however many times it runs.

XLA:TPU turns FSDP matmuls into windowed einsums (unless told not to, `distributed.TPU_FLAGS`):
a while loop whose body multiplies the local shard while a collective-permute brings the next
one, unrolled twice. Its cost analysis prices that body once, so `Module.loop_extra` adds the
FLOPs (convolutions, dots) and bytes of every loop body's other runs; the trip count comes from
the loop's own condition, start and step. Every price here is weighted by how often its
computation runs (`Module.runs`; both branches of a conditional count as run).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict

COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
          "f32": 4, "s64": 8, "u64": 8, "f64": 8}
# Instructions that move no HBM bytes of their own (or whose traffic is counted elsewhere).
_NO_TRAFFIC = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast", "partition-id",
               "replica-id", "after-all", "opt-barrier", "while", "call", "conditional",
               *COLLECTIVES, *(c + s for c in COLLECTIVES for s in ("-start", "-done")),
               "copy-start", "copy-done"}
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.+?) ([a-z][\w\-]*)\((.*)$")


def array_bytes(shape_text: str) -> int:
    """Bytes of the arrays in an HLO result type such as `bf16[8,128]{1,0}` or a tuple of them."""
    return sum(_BYTES.get(dtype, 4) * math.prod(int(d) for d in dims.split(",") if d)
               for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", shape_text))


def _dims(shape_text: str) -> list[int]:
    return [int(d) for d in re.search(r"\[([\d,]*)\]", shape_text).group(1).split(",") if d]


class Module:
    """A compiled HLO module's computations, instruction types, how often each computation runs
    per execution of the entry (`runs`) and how often XLA's cost analysis counts it (`counted`:
    once per call site, a loop body once)."""

    def __init__(self, hlo_text: str):
        self.computations: dict[str, list[str]] = {}
        self.entry = None
        current = None
        for line in hlo_text.splitlines():
            header = re.match(r"^(ENTRY )?%(\S+) .*\{$", line)
            if header and current is None:
                current = header.group(2)
                self.computations[current] = []
                self.entry = current if header.group(1) else self.entry
            elif line.rstrip() == "}":  # Mosaic kernels' multi-line configs hold indented braces
                current = None
            elif current is not None:
                self.computations[current].append(line)
        self.types = {name: result for computation in self.computations
                      for name, result, _, _ in self.instructions(computation)}
        self.loop_bodies: set[str] = set()
        self.unpriced_loops: list[str] = []  # loops whose trip count could not be read
        self.counted: Counter = Counter()
        self.runs = self._runs()

    def instructions(self, computation: str):
        """(name, result type, opcode, rest of the line) of each instruction."""
        for line in self.computations[computation]:
            m = _INSTRUCTION.match(line)
            if m:
                yield m.groups()

    def _defining(self, computation: str, name: str) -> tuple[str, str, str, str] | None:
        return next((i for i in self.instructions(computation) if i[0] == name), None)

    def _constant(self, computation: str, name: str | None) -> int | None:
        """The integer value of instruction `name`, if it is a constant (or a copy of one)."""
        inst = self._defining(computation, name) if name else None
        while inst and inst[2] == "copy":
            inst = self._defining(computation, re.match(r"%([^,\s)]+)", inst[3]).group(1))
        if inst and inst[2] == "constant":
            value = re.match(r"(-?\d+)\)", inst[3])
            return int(value.group(1)) if value else None
        return None

    def _root(self, computation: str) -> tuple[str, str, str, str]:
        line = next(line for line in self.computations[computation] if line.lstrip().startswith("ROOT"))
        return _INSTRUCTION.match(line).groups()

    def trip_count(self, caller: str, while_rest: str) -> int | None:
        """Iterations of a while loop: XLA's known_trip_count, else read from the loop itself as
        XLA:TPU writes its windowed einsums: the condition `i < N` (N a constant), i's start a
        constant in the operand tuple and its step a constant added in the body's root tuple.
        None for any other loop."""
        known = re.search(r'"known_trip_count":\{"n":"(\d+)"', while_rest)
        if known:
            return int(known.group(1))
        cond = re.search(r"condition=%([\w.\-]+)", while_rest).group(1)
        body = re.search(r"body=%([\w.\-]+)", while_rest).group(1)

        def operand(inst, i):  # the i-th operand's name
            names = re.findall(r"%([^,\s)]+)", inst[3])
            return names[i] if i < len(names) else None
        _, _, opcode, rest = self._root(cond)
        compare = re.match(r"%(\S+), %(\S+)\), direction=LT", rest)
        counter = self._defining(cond, compare.group(1)) if opcode == "compare" and compare else None
        if counter is None or counter[2] != "get-tuple-element":
            return None
        bound = self._constant(cond, compare.group(2))
        index = int(re.search(r"index=(\d+)", counter[3]).group(1))
        init = self._defining(caller, re.match(r"%([^,\s)]+)", while_rest).group(1))
        start = self._constant(caller, operand(init, index)) if init and init[2] == "tuple" else None
        update = self._defining(body, operand(self._root(body), index))
        steps = [self._constant(body, operand(update, i)) for i in (0, 1)] if update and update[2] == "add" else []
        step = next((c for c in steps if c), None)
        if None in (bound, start, step):
            return None
        return max(0, -(-(bound - start) // step))

    def _runs(self) -> Counter:
        calls = defaultdict(list)
        for name in self.computations:
            for _, _, opcode, rest in self.instructions(name):
                if opcode == "while":
                    n = self.trip_count(name, rest)
                    body = re.search(r"body=%([\w.\-]+)", rest).group(1)
                    self.loop_bodies.add(body)
                    if n is None:  # priced as one run, as XLA does, and reported
                        self.unpriced_loops.append(body)
                        n = 1
                    calls[name] += [(body, n), (re.search(r"condition=%([\w.\-]+)", rest).group(1), n + 1)]
                    continue
                for callee in re.findall(r"(?:calls|to_apply|true_computation|false_computation)=%([\w.\-]+)", rest):
                    calls[name].append((callee, 1))
                for group in re.findall(r"(?:branch_computations|called_computations)=\{([^}]*)\}", rest):
                    calls[name] += [(callee, 1) for callee in re.findall(r"%([\w.\-]+)", group)]
        runs = Counter()

        def walk(name, times, sites):
            runs[name] += times
            self.counted[name] += sites
            for callee, n in calls.get(name, ()):
                walk(callee, times * n, sites)
        walk(self.entry, 1, 1)
        for name in self.computations:  # a computation no call reaches (none expected) runs once
            if name not in runs:
                runs[name] = self.counted[name] = 1
        return runs

    def conv_flops(self, result: str, rest: str) -> float:
        """2 x multiply-adds of a convolution, counting only the window taps that land on input
        (not on padding or between dilated input elements): XLA:TPU writes batched matmuls as
        convolutions whose batch dimensions are spatial with lhs_dilate = window size."""
        lhs, rhs = (self.types[n] for n in re.match(r"%([^,\s]+), %([^,\s)]+)", rest).groups())
        lhs, rhs, out = _dims(lhs), _dims(rhs), _dims(result)
        lhs_labels, rhs_labels, out_labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", rest).groups()
        window = dict(kv.split("=") for kv in re.search(r"window=\{([^}]*)\}", rest).group(1).split()) \
            if "window={" in rest else {}
        rank = len(window["size"].split("x")) if "size" in window else 0

        def per_dim(key, default):
            return [int(v) for v in window[key].split("x")] if key in window else [default] * rank
        pads = [int(p.split("_")[0]) for p in window["pad"].split("x")] if "pad" in window else [0] * rank
        taps = 1
        for d, (size, stride, pad, lhs_dilate, rhs_dilate) in enumerate(zip(
                per_dim("size", 1), per_dim("stride", 1), pads, per_dim("lhs_dilate", 1), per_dim("rhs_dilate", 1))):
            last = (lhs[lhs_labels.index(str(d))] - 1) * lhs_dilate
            taps *= sum(1 for o in range(out[out_labels.index(str(d))]) for k in range(size)
                        if 0 <= o * stride + k * rhs_dilate - pad <= last
                        and (o * stride + k * rhs_dilate - pad) % lhs_dilate == 0)
        return 2.0 * out[out_labels.index("b")] * out[out_labels.index("f")] * rhs[rhs_labels.index("i")] * taps

    def dot_flops(self, result: str, rest: str) -> float:
        """2 x result elements x contracted size."""
        lhs = _dims(self.types[re.match(r"%([^,\s]+)", rest).group(1)])
        contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest).group(1)
        return 2.0 * math.prod(_dims(result)) * math.prod(lhs[int(d)] for d in contracting.split(",") if d)

    def _traffic(self, result: str, opcode: str, rest: str) -> float:
        """HBM bytes of one instruction, as XLA's cost analysis counts them: operands and result,
        except that a (dynamic-)slice reads only its slice and a dynamic-update-slice writes only
        its update in place, alone or inside a fusion."""
        if opcode in _NO_TRAFFIC:
            return 0.0
        operands = re.findall(r"%([^,\s)]+)", rest.split("), ")[0])
        sizes = [array_bytes(self.types.get(n, "")) for n in operands]
        if opcode in ("slice", "dynamic-slice"):
            return 2 * array_bytes(result) + sum(sizes[1:])
        if opcode == "dynamic-update-slice":
            return 2 * sizes[1] + sum(sizes[2:])
        callee = re.search(r"calls=%([\w.\-]+)", rest) if opcode == "fusion" else None
        if not callee:
            return array_bytes(result) + sum(sizes)
        fused = list(self.instructions(callee.group(1)))
        params = {int(re.match(r"(\d+)\)", r).group(1)): name for name, _, op, r in fused if op == "parameter"}
        written = array_bytes(result)
        root = self._root(callee.group(1))
        if root[2] == "dynamic-update-slice":  # in place: the buffer parameter is neither read nor written whole
            buffer, update = re.findall(r"%([^,\s)]+)", root[3])[:2]
            written = array_bytes(self.types.get(update, ""))
            params = {k: name for k, name in params.items() if name != buffer}
            sizes = [size if k in params else 0 for k, size in enumerate(sizes)]
        read = 0
        for k, size in enumerate(sizes):
            users = [(op, r_type, names[0] == params[k]) for _, r_type, op, r in fused if k in params
                     for names in [re.findall(r"%([^,\s)]+)", r.split("), ")[0])] if params[k] in names]
            sliced = users and all(op in ("slice", "dynamic-slice") and first for op, _, first in users)
            read += sum(array_bytes(t) for _, t, _ in users) if sliced else size
        return written + read

    def counted_bytes(self) -> float:
        """HBM bytes with each loop body counted once, as XLA's cost analysis counts them (fusions
        priced at their call, not inside)."""
        levels = [self.entry, *self.loop_bodies]
        return sum(self._traffic(result, opcode, rest) for name in levels
                   for _, result, opcode, rest in self.instructions(name))

    def loop_extra(self) -> tuple[float, float]:
        """FLOPs (convolutions and dots) and HBM bytes (operands + results of each instruction at the
        loop body's level, as for a fusion) of every loop body's runs beyond the one XLA's cost
        analysis counts."""
        flops = nbytes = 0.0
        for name in self.computations:
            extra = self.runs[name] - self.counted[name]
            if extra <= 0:
                continue
            for _, result, opcode, rest in self.instructions(name):
                if opcode == "convolution":
                    flops += extra * self.conv_flops(result, rest)
                elif opcode == "dot":
                    flops += extra * self.dot_flops(result, rest)
                if name in self.loop_bodies:
                    nbytes += extra * self._traffic(result, opcode, rest)
        return flops, nbytes

    def lines(self):
        """(runs, line) of every instruction line: how often its computation runs, and it."""
        for name, lines in self.computations.items():
            for line in lines:
                yield self.runs[name], line


def _module(hlo: str | Module) -> Module:
    return hlo if isinstance(hlo, Module) else Module(hlo)


def _group_size(line: str, default: int) -> int:
    groups = re.search(r"replica_groups=\{\{([\d,]*)\}", line)
    if groups:
        return len(groups.group(1).split(","))
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", line)
    return int(iota.group(2)) if iota else default


def collective_bytes(hlo: str | Module, devices: int) -> dict[str, float]:
    """Bytes each device sends per step, by collective, from a compiled HLO module's text.

    Counts synchronous collectives (also those wrapped in async computations) and the `-done`
    half of start/done pairs, by their result (the output): for a group of g devices an
    all-gather sends out*(g-1)/g, a reduce-scatter out*(g-1), an all-reduce 2*out*(g-1)/g (ring),
    an all-to-all out*(g-1)/g and a collective-permute its output; times the runs of its
    computation (a windowed einsum's loop passes a shard on every iteration).
    """
    sent = dict.fromkeys(COLLECTIVES, 0.0)
    pattern = re.compile(r"=\s*(.+?)\s+(" + "|".join(COLLECTIVES) + r")(-done)?\(")
    for runs, line in _module(hlo).lines():
        m = pattern.search(line)
        if not m or re.search(r"(" + "|".join(COLLECTIVES) + r")-start\(", line):
            continue
        result, op = m.group(1), m.group(2)
        out = array_bytes(result)
        if op == "collective-permute":
            sent[op] += runs * out
            continue
        g = _group_size(line, devices)
        if g <= 1:
            continue
        sent[op] += runs * {"all-gather": out * (g - 1) / g, "reduce-scatter": out * (g - 1),
                            "all-reduce": 2 * out * (g - 1) / g, "all-to-all": out * (g - 1) / g}[op]
    return sent


def gemm_costs(hlo: str | Module) -> tuple[float, float]:
    """FLOPs and operand + result bytes of the library GEMM calls (cuBLAS) in a compiled GPU
    module, which XLA's cost analysis does not price: 2 x result elements x contracted size."""
    module = _module(hlo)
    types = module.types
    flops = nbytes = 0.0
    for runs, line in module.lines():
        if 'custom_call_target="__cublas$' not in line or "gemm_backend_config" not in line:
            continue
        m = re.search(r"= \(?([a-z]+\d*)\[([\d,]*)\].*?custom-call\(%([^,)\s]+), %([^,)\s]+)", line)
        lhs_type = types.get(m.group(3), "")
        lhs_dims = [int(d) for d in re.search(r"\[([\d,]*)\]", lhs_type).group(1).split(",") if d]
        contracting = json.loads(re.search(r'"lhs_contracting_dimensions":(\[[^\]]*\])', line).group(1))
        out = math.prod(int(d) for d in m.group(2).split(",") if d)
        flops += runs * 2.0 * out * math.prod(lhs_dims[int(i)] for i in contracting)
        nbytes += runs * (_BYTES.get(m.group(1), 4) * out + array_bytes(lhs_type) + array_bytes(types.get(m.group(4), "")))
    return flops, nbytes


def fmha_costs(hlo: str | Module) -> tuple[float, float]:
    """FLOPs and operand + result bytes of the cuDNN fused-attention calls, which XLA's cost
    analysis does not price either. With q [B, T, N, H] and k [B, S, K, H], a forward call is
    QK^T and PV (4 BNTSH), a backward one recomputes QK^T and forms dP, dV, dQ, dK (10 BNTSH);
    a causal mask halves both (cuDNN skips the blocks above the diagonal). The decoder's
    `lax.cond` holds two calls of the same shapes (row lengths or a segment bias) of which one
    runs, so the lengths branch is not counted."""
    flops = nbytes = 0.0
    for runs, line in _module(hlo).lines():
        if 'custom_call_target="__cudnn$fmha' not in line or "/cond/branch_1_fun/" in line:
            continue
        operands = re.search(r"operand_layout_constraints=\{(.*?)\}, api_version", line).group(1)
        (b, t, n, h), (_, s_len, _, _) = ([int(d) for d in dims.split(",")] for _, dims in
                                          re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", operands)[:2])
        calls = 5 if "Backward" in line.split("custom_call_target=")[1][:60] else 2
        causal = re.search(r'"mask_type":\s*"\w*CAUSAL"', line) is not None
        flops += runs * calls * 2.0 * b * n * t * s_len * h / (2 if causal else 1)
        result = re.search(r"= (\(.*?\)|\S+) custom-call\(", line).group(1)
        nbytes += runs * (array_bytes(operands) + array_bytes(result))
    return flops, nbytes


def splash_costs(hlo: str | Module) -> tuple[float, float]:
    """FLOPs and operand + result bytes of the Pallas splash attention kernels (Mosaic custom
    calls, unpriced by XLA:TPU). With q [B, N, T, H] and k [B, K, S, H], a forward kernel runs
    QK^T and PV (4 BNTSH), the fused backward one (dkv, which also forms dQ) 10 BNTSH, each over
    the blocks its mask grid [heads, T / block, S / block] keeps: the decoder's causal mask keeps
    the n (n + 1) / 2 blocks on and below the diagonal. (`attention.splash_attention` uses the
    fused backward kernel, so there is no separate dq kernel.)"""
    flops = nbytes = 0.0
    for runs, line in _module(hlo).lines():
        kernel = re.match(r"\s*(?:ROOT )?%(splash_mha_(fwd|dkv)[\w.]*) = (.+?) custom-call\(", line)
        if not kernel:
            continue
        operands = re.search(r"operand_layout_constraints=\{((?:[^{}]|\{[^{}]*\})*)\}", line).group(1)
        shapes = [(dtype, [int(d) for d in dims.split(",") if d])
                  for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", operands)]
        _, blocks_q, blocks_k = next(dims for dtype, dims in shapes if dtype == "s8" and len(dims) == 3)
        if blocks_q != blocks_k:
            raise ValueError(f"{kernel.group(1)}: a {blocks_q} x {blocks_k} block grid is not the causal self-attention "
                             "this pricing assumes")
        (b, n, t, h), (_, _, s_len, _) = [dims for dtype, dims in shapes if len(dims) == 4][:2]
        kept = (blocks_q + 1) / 2 / blocks_q
        flops += runs * {"fwd": 4, "dkv": 10}[kernel.group(2)] * b * n * t * s_len * h * kept
        nbytes += runs * (array_bytes(operands) + array_bytes(kernel.group(3)))
    return flops, nbytes
