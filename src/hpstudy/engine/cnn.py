"""A CNN population: CNNs of one shape, their parameters stacked along a member axis.

    >>> pop = CNNPopulation.from_configs(configs, device="cpu", dtype=torch.float32)
    >>> loss = pop.loss_and_grads(x, y)     # x (M, B, 784) or (B, 784) shared, y (M, B) -> (M,)
    >>> pop.params[0].shape                 # the first convolution's weights
    torch.Size([M, 32, 1, 3, 3])

The same interface as `Population` (`configs`, `rows`, `grad_rows`, `params`, `grads`,
`select`, `forward`, `loss_and_grads`, `member_state_dict`), so `StackedOptimizer`, the
`StepRunner` and the trainer drive it unchanged; plus each BatchNorm2d's running statistics per
member (`buffers`), which a saved member carries and evaluation uses.

Layout, chosen by measurement on this 2-core CPU (docs/design.md, "CNN populations"): the
parameters and the optimizer are stacked, but the convolutions run member by member, each on its
own channels-last (N, H, W, C) activations with PyTorch's own kernels. Folding members into
channels (grouped convolutions, `groups = M`) was slower here than one member at a time: its
activations are M times larger than the caches, and oneDNN's grouped kernels are not faster per
group. Channels-last is what pays: max-pooling with indices runs about 9x faster and batch
normalisation about 4x faster than in the NCHW layout of a plain `nn.Sequential`. The first
convolution (one input channel, where oneDNN's convolution is slow) is `unfold` + one matmul; its
unfolded batch is shared by all members when they share the batch.

A member's forward and backward are the kernels autograd runs for its `nn.Sequential`
(`convolution_backward`, `native_batch_norm_backward`, `max_pool2d_with_indices_backward`, the
activations' backward), called on that member's tensors only (a ReLU member pools before its
activation, which commutes exactly: `_POOL_FIRST`): no graph is built, gradients land in the
stacked rows, and a member's bits cannot depend on its neighbours. Batch statistics are
each member's own, per channel; running statistics are updated per member as BatchNorm2d does
(momentum 0.1, unbiased variance) and `forward` (evaluation) uses them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hpstudy.config.config import Config
from hpstudy.engine.dropout import dropout_mask, epoch_generators
from hpstudy.engine.model import build_cnn

# The activation kernels and the padded row layout are the MLP population's, so both engines
# share one definition of each (population.ROW_ALIGN explains the padding).
from hpstudy.engine.population import ACTIVATION_KERNELS, member_order_key, row_views, to_rows

_aten = torch.ops.aten
_CL = torch.channels_last
_BN_MOMENTUM, _BN_EPS = 0.1, 1e-5  # nn.BatchNorm2d's defaults
_POOL = ([2, 2], [2, 2], [0, 0], [1, 1], False)  # MaxPool2d(2): kernel, stride, pad, dilation
# ReLU and 2x2 max-pooling commute exactly: max(relu(x)) == relu(max(x)), and where the pooled
# maximum is <= 0 the gradient is 0 whichever position took it, as in nn.Sequential's order.
# Pooling first runs the activation and its backward on a quarter of the values (measured
# here: a member-step 12% shorter at M = 8). Other activations keep the module order: a strictly
# increasing one can still round two inputs to one output, and then pick another position.
_POOL_FIRST = frozenset({"relu"})
_EVAL_CHUNK = 1024  # images per evaluation pass of one member (~100 MB of float32 activations)


@dataclass(frozen=True)
class _Conv:
    """Where one convolution's tensors sit in the population's lists, and what follows it."""

    weight: int  # index into params: (M, C_out, C_in, k, k)
    bias: int | None  # (M, C_out); None before a batch norm
    bn: tuple[int, int, int, int] | None  # (gamma, beta) in params, (mean, var) in buffers
    pool: bool = False  # a 2x2 max-pooling after the activation (the last of a block)


@dataclass(frozen=True)
class CNNLayout:
    """One member's tensors, the same for every member of a shape: the state_dict keys and, for
    each, where it is stored."""

    keys: tuple[str, ...]  # build_cnn(config).state_dict() keys, in order
    places: tuple[tuple[str, int], ...]  # per key: ("param" | "buffer" | "count", index)
    convs: tuple[_Conv, ...]
    dense: tuple[tuple[int, int], ...]  # (weight, bias) params of each Linear
    kernel_size: int

    @classmethod
    def of(cls, net: nn.Sequential, kernel_size: int) -> CNNLayout:
        n_params = n_buffers = 0
        places, convs, dense = {}, [], []
        pending: dict = {}
        for index, module in enumerate(net):
            if isinstance(module, nn.Conv2d):
                if pending:
                    convs.append(_Conv(**pending))
                has_bias = module.bias is not None
                pending = {"weight": n_params, "bias": n_params + 1 if has_bias else None,
                           "bn": None}  # fmt: skip
            elif isinstance(module, nn.BatchNorm2d):
                pending["bn"] = (n_params, n_params + 1, n_buffers, n_buffers + 1)
            elif isinstance(module, nn.MaxPool2d):
                pending["pool"] = True
            elif isinstance(module, nn.Linear):
                dense.append((n_params, n_params + 1))
            for name, _ in module.named_parameters():
                places[f"{index}.{name}"] = ("param", n_params)
                n_params += 1
            for name, _ in module.named_buffers():
                if name == "num_batches_tracked":
                    places[f"{index}.{name}"] = ("count", 0)
                else:
                    places[f"{index}.{name}"] = ("buffer", n_buffers)
                    n_buffers += 1
        convs.append(_Conv(**pending))
        keys = tuple(net.state_dict())
        return cls(keys, tuple(places[k] for k in keys), tuple(convs), tuple(dense),
                   kernel_size)  # fmt: skip


def initial_state(config: Config) -> tuple[list[torch.Tensor], list[torch.Tensor], CNNLayout]:
    """(parameters, running statistics, layout) exactly as `torch.manual_seed(seed)` +
    `build_cnn` makes them; the caller's global RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = build_cnn(config)
    buffers = [b for name, b in net.named_buffers() if not name.endswith("num_batches_tracked")]
    params = [p.detach() for p in net.parameters()]
    return params, buffers, CNNLayout.of(net, config.kernel_size)


def _shape_key(config: Config) -> tuple:
    return (config.conv_layers, config.kernel_size, config.batch_norm, config.dense_sizes,
            config.n_inputs)  # fmt: skip


def _activate_and_pool(pool: bool, activation: str, zb: torch.Tensor):
    """The activation of `zb`, then the block's 2x2 max-pooling when `pool` (ReLU pools first,
    see _POOL_FIRST): (output, what the backward needs: the activation's input and output and
    the pooling's indices)."""
    act = ACTIVATION_KERNELS[activation][0]
    if not pool:
        return (a := act(zb)), (zb, a, None)
    if activation in _POOL_FIRST:
        pooled, indices = _aten.max_pool2d_with_indices(zb, *_POOL)
        return (a := act(pooled)), (pooled, a, indices)
    a = act(zb)
    pooled, indices = _aten.max_pool2d_with_indices(a, *_POOL)
    return pooled, (zb, a, indices)


def _activate_and_pool_backward(activation: str, zb, saved, grad) -> torch.Tensor:
    """The gradient wrt `zb` from the gradient wrt `_activate_and_pool`'s output."""
    act_backward = ACTIVATION_KERNELS[activation][1]
    act_in, act_out, indices = saved
    if indices is None:
        return act_backward(grad, act_in, act_out)
    if activation in _POOL_FIRST:
        grad = act_backward(grad, act_in, act_out)
        return _aten.max_pool2d_with_indices_backward(grad, zb, *_POOL, indices)
    grad = _aten.max_pool2d_with_indices_backward(grad, act_out, *_POOL, indices)
    return act_backward(grad, act_in, act_out)


class CNNPopulation:
    """Stacked parameters and running statistics of M same-shape CNNs."""

    def __init__(self, configs, params, buffers, layout: CNNLayout, keys_with_dropout=None):
        self.configs = list(configs)  # member i's configuration, sorted by member_order_key
        self.layout = layout
        # A member with dropout has Dropout modules in its nn.Sequential, which shift the dense
        # layers' state_dict keys; its tensors sit in the same places.
        self._keys = {False: layout.keys, True: keys_with_dropout or layout.keys}
        self.shapes = [p.shape[1:] for p in params]
        self.rows = [to_rows(p) for p in params]  # (M, padded numel) per tensor
        self.grad_rows = [torch.zeros_like(r) for r in self.rows]
        self.buffers = buffers  # [(M, C) running mean, (M, C) running var] per batch norm
        # BatchNorm2d's num_batches_tracked, per member so a best-epoch snapshot keeps its own.
        self.batches_tracked = torch.zeros(len(configs), dtype=torch.long, device=params[0].device)
        self.has_dropout = any(c.dropout for c in self.configs)  # dense layers only
        self._dropout_generators: list[torch.Generator | None] = [None] * len(self.configs)
        self._make_views()

    def _make_views(self) -> None:
        self.params = row_views(self.rows, self.shapes)
        self.grads = row_views(self.grad_rows, self.shapes)

    @classmethod
    def from_configs(
        cls, configs: Sequence[Config], *, device: torch.device | str, dtype: torch.dtype
    ) -> CNNPopulation:
        if list(configs) != sorted(configs, key=member_order_key):
            raise ValueError("sort a population's configurations by member_order_key first")
        if not all(c.is_cnn for c in configs) or len({_shape_key(c) for c in configs}) != 1:
            raise ValueError("a CNN population needs CNN configurations of one shape")
        cache: dict[tuple, tuple] = {}  # init depends on (seed, shape) only; keys on dropout
        for config in configs:
            if (config.seed, config.dropout > 0) not in cache:
                cache[config.seed, config.dropout > 0] = initial_state(config)
        per_member = [cache[c.seed, c.dropout > 0] for c in configs]
        layouts = {dropout: state[2] for (_, dropout), state in cache.items()}
        layout = layouts.get(False, layouts.get(True))
        keys_with_dropout = layouts[True].keys if True in layouts else None

        def stack(tensors):
            return torch.stack(tensors).to(device=device, dtype=dtype)

        params = [stack([m[0][i] for m in per_member]) for i in range(len(per_member[0][0]))]
        buffers = [stack([m[1][i] for m in per_member]) for i in range(len(per_member[0][1]))]
        return cls(configs, params, buffers, layout, keys_with_dropout)

    @property
    def n_members(self) -> int:
        return len(self.configs)

    def start_epoch(self, epoch: int) -> None:
        """Seed each dropout member's mask generator for epoch `epoch` (as the MLP population:
        the masks of its dense hidden layers, drawn step by step, layer by layer)."""
        self._dropout_generators = epoch_generators(
            self._dropout_generators, self.configs, epoch, self.rows[0].device
        )

    @property
    def dropout_generators(self) -> list[torch.Generator]:
        """The members' own mask generators, which a CUDA graph of a step must register."""
        return [g for g in self._dropout_generators if g is not None]

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members at positions `keep` (a sorted index tensor)."""
        self.configs = [self.configs[i] for i in keep.tolist()]
        self.rows = [r[keep] for r in self.rows]
        self.grad_rows = [g[keep] for g in self.grad_rows]
        self.buffers = [b[keep] for b in self.buffers]
        self.batches_tracked = self.batches_tracked[keep]
        self._dropout_generators = [self._dropout_generators[i] for i in keep.tolist()]
        self._make_views()

    # -- training --------------------------------------------------------------------------

    def loss_and_grads(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-member mean cross-entropy (M,) for x (M, B, D) or (B, D) shared, y (M, B); fills
        self.grads with each member's gradient of its own `CrossEntropyLoss()` and updates its
        running statistics, as one training step of its `nn.Sequential` would."""
        shared = self._unfold(x) if x.dim() == 2 else None
        losses = [
            self._member_step(m, shared if shared is not None else self._unfold(x[m]), y[m])
            for m in range(self.n_members)
        ]
        self.batches_tracked += 1
        return torch.stack(losses)

    def _member_step(self, m: int, unfolded: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        config, generator = self.configs[m], self._dropout_generators[m]
        act, act_backward = ACTIVATION_KERNELS[config.activation]
        saved, h = [], unfolded
        for c, conv in enumerate(self.layout.convs):
            z = self._conv(c, conv, m, h)
            zb, mean, invstd = z, None, None
            if conv.bn is not None:
                gamma, beta, r_mean, r_var = self._bn_tensors(conv, m)
                zb, mean, invstd = _aten.native_batch_norm(
                    z, gamma, beta, r_mean, r_var, True, _BN_MOMENTUM, _BN_EPS
                )
            out, pooling = _activate_and_pool(conv.pool, config.activation, zb)
            saved.append((h, z, zb, mean, invstd, pooling))
            h = out
        n_batch = y.shape[0]
        dense_in = [h.reshape(n_batch, -1)]  # (B, C * h * w) in NCHW order, as nn.Flatten
        dense_z, dense_a, masks = [], [], []
        for layer, (w, bias) in enumerate(self.layout.dense):
            z = torch.addmm(self.params[bias][m], dense_in[-1], self.params[w][m].t())
            if layer < len(self.layout.dense) - 1:
                a = act(z)
                mask = None if generator is None else dropout_mask(
                    generator, a.shape, config.dropout, dtype=a.dtype)  # fmt: skip
                dense_z.append(z)
                dense_a.append(a)
                masks.append(mask)
                dense_in.append(a if mask is None else a * mask)
        log_probs = torch.log_softmax(z, dim=-1)  # (B, classes)
        loss = -log_probs.gather(-1, y.unsqueeze(-1)).mean()
        dz = log_probs.exp()
        dz.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(dz[:, :1], -1.0))
        dz.div_(n_batch)  # d(mean loss)/d(logits)
        for layer in reversed(range(len(self.layout.dense))):
            w, bias = self.layout.dense[layer]
            torch.mm(dz.t(), dense_in[layer], out=self.grads[w][m])
            torch.sum(dz, dim=0, out=self.grads[bias][m])
            grad_in = torch.mm(dz, self.params[w][m])
            if layer > 0:
                if masks[layer - 1] is not None:
                    grad_in.mul_(masks[layer - 1])
                dz = act_backward(grad_in, dense_z[layer - 1], dense_a[layer - 1])
        grad = grad_in.view(h.shape).contiguous(memory_format=_CL)  # back to the last pooling
        for c in reversed(range(len(self.layout.convs))):
            conv = self.layout.convs[c]
            h_in, z, zb, mean, invstd, pooling = saved[c]
            grad = _activate_and_pool_backward(config.activation, zb, pooling, grad)
            if conv.bn is not None:
                gamma, _, r_mean, r_var = self._bn_tensors(conv, m)
                grad, g_gamma, g_beta = _aten.native_batch_norm_backward(
                    grad, z, gamma, r_mean, r_var, mean, invstd, True, _BN_EPS, [True] * 3
                )
                self.grads[conv.bn[0]][m].copy_(g_gamma)
                self.grads[conv.bn[1]][m].copy_(g_beta)
            grad = self._conv_backward(c, conv, m, h_in, grad)
        return loss

    def _bn_tensors(self, conv: _Conv, m: int):
        gamma, beta, mean, var = conv.bn
        params, buffers = self.params, self.buffers
        return params[gamma][m], params[beta][m], buffers[mean][m], buffers[var][m]

    def _unfold(self, x: torch.Tensor) -> torch.Tensor:
        """(B, side * side) images -> (B * side * side, k * k): the first convolution's
        patches."""
        side, k = self.configs[0].image_side, self.layout.kernel_size
        padded = F.pad(x.view(-1, side, side), [k // 2] * 4)  # (B, side + k - 1, ...)
        # F.unfold's order (row, column of the kernel), built in the layout the matmul reads:
        # measured 10x faster than F.unfold + transpose here.
        shifted = [padded[:, i : i + side, j : j + side] for i in range(k) for j in range(k)]
        return torch.stack(shifted, dim=-1).view(-1, k * k)

    def _conv(self, c: int, conv: _Conv, m: int, h: torch.Tensor) -> torch.Tensor:
        """Convolution c's output: (B, C_out, H, W) channels-last. The first takes the unfolded
        patches (one input channel: a (B*H*W, k*k) x (k*k, C_out) matmul), the others a
        channels-last (B, C_in, H, W)."""
        weight = self.params[conv.weight][m]  # (C_out, C_in, k, k)
        bias = self.params[conv.bias][m] if conv.bias is not None else None
        if c > 0:
            return F.conv2d(h, weight, bias, padding=self.layout.kernel_size // 2)
        side, c_out = self.configs[0].image_side, weight.shape[0]
        flat = weight.view(c_out, -1).t()
        z = torch.mm(h, flat) if bias is None else torch.addmm(bias, h, flat)
        return z.view(-1, side, side, c_out).permute(0, 3, 1, 2)  # (B, C, H, W) channels-last

    def _conv_backward(self, c, conv: _Conv, m: int, h_in, grad) -> torch.Tensor | None:
        """Fill convolution c's weight and bias gradients; return the gradient wrt its input."""
        grad_w, grad_b = self.grads[conv.weight][m], None
        if conv.bias is not None:
            grad_b = self.grads[conv.bias][m]
        if c == 0:
            flat = grad.permute(0, 2, 3, 1).reshape(-1, grad.shape[1])  # (B*H*W, C_out)
            # (patches^T grad)^T: MKL takes 1.4 ms for it, 9 ms for grad^T patches (measured).
            grad_w.view(grad_w.shape[0], -1).copy_(torch.mm(h_in.t(), flat).t())
            if grad_b is not None:
                torch.sum(flat, dim=0, out=grad_b)
            return None
        pad = self.layout.kernel_size // 2
        weight = self.params[conv.weight][m]
        grad_in, g_w, g_b = _aten.convolution_backward(
            grad, h_in, weight, None if grad_b is None else [weight.shape[0]], [1, 1], [pad, pad],
            [1, 1], False, [0, 0], 1, [True, True, grad_b is not None],
        )  # fmt: skip
        grad_w.copy_(g_w)
        if grad_b is not None:
            grad_b.copy_(g_b)
        return grad_in

    # -- evaluation and saving --------------------------------------------------------------

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation logits (M, N, classes) for x (N, D) shared or (M, N, D): each member as
        its `nn.Sequential` in eval mode (running statistics), in chunks of images."""
        out = []
        for m in range(self.n_members):
            xm = x if x.dim() == 2 else x[m]
            chunks = [self._member_eval(m, c) for c in xm.split(_EVAL_CHUNK)]
            out.append(torch.cat(chunks))
        return torch.stack(out)

    def _member_eval(self, m: int, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATION_KERNELS[self.configs[m].activation][0]
        h = self._unfold(x)
        for c, conv in enumerate(self.layout.convs):
            z = self._conv(c, conv, m, h)
            if conv.bn is not None:
                gamma, beta, r_mean, r_var = self._bn_tensors(conv, m)
                z = _aten.native_batch_norm(
                    z, gamma, beta, r_mean, r_var, False, _BN_MOMENTUM, _BN_EPS
                )[0]
            h = _activate_and_pool(conv.pool, self.configs[m].activation, z)[0]
        h = h.reshape(len(x), -1)
        for layer, (w, bias) in enumerate(self.layout.dense):
            h = torch.addmm(self.params[bias][m], h, self.params[w][m].t())
            if layer < len(self.layout.dense) - 1:
                h = act(h)
        return h

    def state_tensors(self) -> list[torch.Tensor]:
        """Everything a saved member holds, stacked: parameters, running statistics, and the
        batch count (the trainer snapshots these at each member's best epoch)."""
        return [*self.params, *self.buffers, self.batches_tracked]

    def state_dict_from(self, tensors: Sequence[torch.Tensor], i: int) -> dict[str, torch.Tensor]:
        """Row i of `state_tensors()`-shaped `tensors` as `build_cnn(config).state_dict()`."""
        n_params, n_buffers = len(self.params), len(self.buffers)
        out = {}
        keys = self._keys[self.configs[i].dropout > 0]
        for key, (kind, index) in zip(keys, self.layout.places, strict=True):
            position = {"param": index, "buffer": n_params + index,
                        "count": n_params + n_buffers}[kind]  # fmt: skip
            out[key] = tensors[position][i].detach().cpu().clone()
        return out

    def member_state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's weights and statistics as `build_cnn(config).state_dict()`, on the CPU."""
        return self.state_dict_from(self.state_tensors(), i)
