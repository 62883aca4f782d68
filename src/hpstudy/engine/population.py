"""A population: MLPs of one shape stacked along a leading member axis, trained as one.

    >>> pop = Population.from_configs(configs)          # same layer sizes, any activations
    >>> loss = pop.loss_and_grads(x, y)                 # x (M, B, 784), y (M, B) -> (M,)
    >>> pop.params[0].shape                             # first layer's weights
    torch.Size([M, 256, 784])

Each layer is one batched matmul over all members. Forward and backward are written out by hand
(they are short for an MLP) so that no autograd graph is built per step and gradients land in
stacked tensors that the stacked optimizers update in place. Members are kept sorted by
(activation, optimizer, lr) so that each activation and each optimizer rule applies to a
contiguous range of members: slices along the member axis are views, never copies.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from hpstudy.config.choices import LEAKY_RELU_SLOPE
from hpstudy.config.config import Config
from hpstudy.engine.dropout import dropout_mask, epoch_generators
from hpstudy.engine.model import build_mlp, mlp_parameter_names

# activation name -> (f(z), backward(grad wrt a, z, a) -> grad wrt z). The backward functions
# are the kernels autograd itself runs for these modules, so gradients match nn bit for bit.
_aten = torch.ops.aten
ACTIVATION_KERNELS: dict[str, tuple[Callable, Callable]] = {
    "relu": (torch.relu, lambda g, z, a: _aten.threshold_backward(g, a, 0)),
    "sigmoid": (torch.sigmoid, lambda g, z, a: _aten.sigmoid_backward(g, a)),
    "tanh": (torch.tanh, lambda g, z, a: _aten.tanh_backward(g, a)),
    "leaky_relu": (
        lambda z: F.leaky_relu(z, LEAKY_RELU_SLOPE),
        lambda g, z, a: _aten.leaky_relu_backward(g, z, LEAKY_RELU_SLOPE, False),
    ),
    "elu": (F.elu, lambda g, z, a: _aten.elu_backward(g, 1.0, 1, 1, False, z)),
}

# The same ATen kernels in their out= form (f(z, out), backward(g, z, a, out)): a population that
# mixes activations writes each run of members into its slice of one buffer instead of
# concatenating per-run results, with the same bits (tests/test_population_kernels.py).
ACTIVATION_OUT_KERNELS: dict[str, tuple[Callable, Callable]] = {
    "relu": (
        lambda z, out: _aten.relu.out(z, out=out),
        lambda g, z, a, out: _aten.threshold_backward.grad_input(g, a, 0, grad_input=out),
    ),
    "sigmoid": (
        lambda z, out: _aten.sigmoid.out(z, out=out),
        lambda g, z, a, out: _aten.sigmoid_backward.grad_input(g, a, grad_input=out),
    ),
    "tanh": (
        lambda z, out: _aten.tanh.out(z, out=out),
        lambda g, z, a, out: _aten.tanh_backward.grad_input(g, a, grad_input=out),
    ),
    "leaky_relu": (
        lambda z, out: _aten.leaky_relu.out(z, LEAKY_RELU_SLOPE, out=out),
        lambda g, z, a, out: _aten.leaky_relu_backward.grad_input(
            g, z, LEAKY_RELU_SLOPE, False, grad_input=out
        ),
    ),
    "elu": (
        lambda z, out: _aten.elu.out(z, 1.0, 1, 1, out=out),
        lambda g, z, a, out: _aten.elu_backward.grad_input(g, 1.0, 1, 1, False, z, grad_input=out),
    ),
}


def member_order_key(config: Config) -> tuple:
    """Sort key that makes each activation a contiguous run of members, and within it each
    optimizer update group (optimizers.group_key: its fields come first here)."""
    c = config
    return (c.activation, c.optimizer, c.momentum > 0, c.nesterov, c.lr, c.schedule,
            c.max_epochs, c.weight_decay, c.betas, c.momentum, c.dropout, c.seed)  # fmt: skip


def runs(values: Sequence) -> list[tuple[object, slice]]:
    """[(value, slice)] for each maximal run of equal consecutive values."""
    out, start = [], 0
    for value, group in itertools.groupby(values):
        n = len(list(group))
        out.append((value, slice(start, start + n)))
        start += n
    return out


def initial_parameters(config: Config) -> list[torch.Tensor]:
    """[W1, b1, W2, b2, ...] exactly as `torch.manual_seed(seed)` + `build_mlp` makes them."""
    # fork_rng leaves the caller's global RNG state untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = build_mlp(config)
    return [t.detach() for t in net.state_dict().values()]


class Population:
    """Stacked parameters of M same-shape MLPs, with hand-written forward and backward."""

    def __init__(self, configs: Sequence[Config], params: list[torch.Tensor]):
        self.configs = list(configs)  # member i's configuration, sorted by member_order_key
        self.shapes = [p.shape[1:] for p in params]  # one member's shape of each tensor
        # Storage: one (M, padded numel) row block per tensor; params and grads are views.
        self.rows = [to_rows(p) for p in params]
        self.grad_rows = [torch.zeros_like(r) for r in self.rows]
        self._make_views()
        self._dropout_generators: list[torch.Generator | None] = [None] * len(self.configs)

    def _make_views(self) -> None:
        self.params = row_views(self.rows, self.shapes)  # [W1 (M, out, in), b1 (M, out), ...]
        self.grads = row_views(self.grad_rows, self.shapes)
        # (M, in, out) scratch for the weight gradients computed transposed (see backward).
        self._grads_t = [
            g.new_empty(g.shape[0], g.shape[2], g.shape[1])
            if g.shape[1] < _MIN_DIRECT_ROWS
            else None
            for g in self.grads[::2]
        ]
        self.activation_runs = runs([c.activation for c in self.configs])
        self.has_dropout = any(c.dropout for c in self.configs)

    @classmethod
    def from_configs(
        cls, configs: Sequence[Config], *, device: torch.device, dtype: torch.dtype
    ) -> Population:
        if list(configs) != sorted(configs, key=member_order_key):
            raise ValueError("sort a population's configurations by member_order_key first")
        if len({c.layer_sizes for c in configs}) != 1:
            raise ValueError("a population needs configurations of one shape")
        cache: dict[tuple, list[torch.Tensor]] = {}  # init depends on (seed, shape) only
        per_member = []
        for config in configs:
            key = (config.seed, config.layer_sizes)
            if key not in cache:
                cache[key] = initial_parameters(config)
            per_member.append(cache[key])
        params = [
            torch.stack([member[i] for member in per_member]).to(device=device, dtype=dtype)
            for i in range(len(per_member[0]))
        ]
        return cls(configs, params)

    @property
    def n_members(self) -> int:
        return len(self.configs)

    @property
    def n_layers(self) -> int:
        return len(self.params) // 2

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members at positions `keep` (a sorted index tensor)."""
        keep_list = keep.tolist()
        self.configs = [self.configs[i] for i in keep_list]
        self.rows = [r[keep] for r in self.rows]
        self.grad_rows = [g[keep] for g in self.grad_rows]
        self._make_views()
        self._dropout_generators = [self._dropout_generators[i] for i in keep_list]

    def start_epoch(self, epoch: int) -> None:
        """Seed each dropout member's mask generator for epoch `epoch` (see engine.dropout)."""
        self._dropout_generators = epoch_generators(
            self._dropout_generators, self.configs, epoch, self.rows[0].device
        )

    @property
    def dropout_generators(self) -> list[torch.Generator]:
        """The members' own mask generators, which a CUDA graph of a step must register."""
        return [g for g in self._dropout_generators if g is not None]

    def _dropout_masks(self, n_batch: int) -> list[torch.Tensor] | None:
        """One (M, B, width) mask per hidden layer: ones for members without dropout, else
        drawn from the member's generator step by step, layer by layer (as SeededDropout)."""
        if not self.has_dropout:
            return None
        rows = self.rows[0]
        widths = [self.shapes[2 * layer][0] for layer in range(self.n_layers - 1)]
        masks = [rows.new_ones(self.n_members, n_batch, w) for w in widths]
        for m, (config, generator) in enumerate(zip(self.configs, self._dropout_generators,
                                                    strict=True)):  # fmt: skip
            if generator is None:
                continue
            for mask, w in zip(masks, widths, strict=True):
                mask[m] = dropout_mask(generator, (n_batch, w), config.dropout, dtype=rows.dtype)
        return masks

    def _activate(self, z: torch.Tensor) -> torch.Tensor:
        if len(self.activation_runs) == 1:
            return ACTIVATION_KERNELS[self.activation_runs[0][0]][0](z)
        out = torch.empty_like(z)  # (M, B, width): each run of members writes its own slice
        for name, s in self.activation_runs:
            ACTIVATION_OUT_KERNELS[name][0](z[s], out[s])
        return out

    def _activation_backward(self, grad: torch.Tensor, z: torch.Tensor, a: torch.Tensor):
        if len(self.activation_runs) == 1:
            return ACTIVATION_KERNELS[self.activation_runs[0][0]][1](grad, z, a)
        out = torch.empty_like(z)
        for name, s in self.activation_runs:
            ACTIVATION_OUT_KERNELS[name][1](grad[s], z[s], a[s], out[s])
        return out

    def forward(self, x: torch.Tensor, *, keep: bool = False, masks=None):
        """Logits (M, B, 10) for inputs x (M, B, 784), or x (B, 784) shared by all members.

        With keep=True also returns [(z, a, out)] per hidden layer, for the backward pass
        (out = a times the layer's dropout mask, when `masks` are given: training only).
        """
        saved = []
        # A shared (B, in) batch is expanded (a view), never folded into one wide matmul: each
        # member then takes the same per-member matmul whatever its neighbours' seeds.
        a = x.expand(self.n_members, *x.shape) if x.dim() == 2 else x
        for layer in range(self.n_layers - 1):
            z = self._linear(layer, a)
            a_next = self._activate(z)
            out = a_next * masks[layer] if masks is not None else a_next
            if keep:
                saved.append((z, a_next, out))
            a = out
        logits = self._linear(self.n_layers - 1, a)
        return (logits, saved) if keep else logits

    def _linear(self, layer: int, a: torch.Tensor) -> torch.Tensor:
        """(M, B, in) @ (M, in, out) + (M, 1, out)."""
        weight, bias = self.params[2 * layer], self.params[2 * layer + 1]
        return torch.baddbmm(bias.unsqueeze(1), a, weight.transpose(1, 2))

    def loss_and_grads(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-member mean cross-entropy (M,) for x (M, B, 784), y (M, B); fills self.grads.

        The gradient of each member is exactly that of its own `CrossEntropyLoss()` (mean over
        the batch) backpropagated through its own `nn.Sequential`.
        """
        masks = self._dropout_masks(y.shape[1])
        logits, saved = self.forward(x, keep=True, masks=masks)
        log_probs = torch.log_softmax(logits, dim=-1)  # (M, B, 10)
        loss = -log_probs.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(dim=1)  # (M,)
        n_batch = y.shape[1]
        dz = log_probs.exp()
        dz.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(dz[..., :1], -1.0))
        dz.div_(n_batch)  # d(mean loss)/d(logits): (softmax - onehot) / B
        x = x.expand(self.n_members, *x.shape) if x.dim() == 2 else x
        inputs = [x] + [out for _, _, out in saved]
        for layer in reversed(range(self.n_layers)):
            self._weight_grad(layer, dz, inputs[layer])
            torch.sum(dz, dim=1, out=self.grads[2 * layer + 1])
            if layer == 0:
                break
            z, a, _ = saved[layer - 1]
            grad_out = torch.bmm(dz, self.params[2 * layer])
            if masks is not None:
                grad_out.mul_(masks[layer - 1])
            dz = self._activation_backward(grad_out, z, a)
        return loss

    def _weight_grad(self, layer: int, dz: torch.Tensor, a: torch.Tensor) -> None:
        """dW = dz^T a (M, out, in) for dz (M, B, out) and a (M, B, in)."""
        grad_t = self._grads_t[layer]
        if grad_t is None:
            torch.bmm(dz.transpose(1, 2), a, out=self.grads[2 * layer])
            return
        # MKL's batched float32 gemm rounds an output of few rows (10 here) differently from a
        # lone gemm, so dz^T a would depend on M; (a^T dz)^T has `in` rows and does not.
        torch.bmm(a.transpose(1, 2), dz, out=grad_t)
        self.grads[2 * layer].copy_(grad_t.transpose(1, 2))

    def state_tensors(self) -> list[torch.Tensor]:
        """Everything a saved member holds, stacked: for an MLP its parameters."""
        return self.params

    def state_dict_from(self, tensors: Sequence[torch.Tensor], i: int) -> dict[str, torch.Tensor]:
        """Row i of `state_tensors()`-shaped `tensors` as `build_mlp(config).state_dict()`."""
        return member_state(self.configs[i], list(tensors), i)

    def member_state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's weights as `build_mlp(config).state_dict()`, on the CPU."""
        return self.state_dict_from(self.params, i)


def member_state(config: Config, params: list[torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """Row i of stacked [W1, b1, W2, ...] as `build_mlp(config).state_dict()`, on the CPU."""
    names = mlp_parameter_names(config)
    return {name: p[i].detach().cpu().clone() for name, p in zip(names, params, strict=True)}


# Each member's slice of every stored tensor starts at a multiple of this many elements, so
# vectorised kernels that process a whole row block (torch._fused_adam_ puts elements in SIMD
# lanes by their offset, and rounds a lane or a scalar tail differently) treat a member's
# elements the same whatever its position. 64 covers AVX-512 (16 floats, 8 doubles) and
# 64-byte cache-line units, with room to spare.
ROW_ALIGN = 64

# Weight gradients with fewer rows (outputs) than this are computed transposed (see
# _weight_grad). Measured on MKL: 10 rows depend on the batch count, 64 and more do not; the
# transposed form costs a copy, twice the matmul's time for the first layer, so it is kept to
# the narrow layers.
_MIN_DIRECT_ROWS = 64


def to_rows(stacked: torch.Tensor) -> torch.Tensor:
    """(M, *shape) -> (M, numel padded to ROW_ALIGN), zeros in the padding."""
    n_members, numel = stacked.shape[0], stacked[0].numel()
    rows = stacked.new_zeros(n_members, -(-numel // ROW_ALIGN) * ROW_ALIGN)
    rows[:, :numel] = stacked.reshape(n_members, numel)
    return rows


def row_views(rows: list[torch.Tensor], shapes: list[torch.Size]) -> list[torch.Tensor]:
    """(M, *shape) views of the unpadded part of each row block."""
    return [
        r[:, : shape.numel()].view(r.shape[0], *shape)
        for r, shape in zip(rows, shapes, strict=True)
    ]
