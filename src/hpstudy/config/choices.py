"""The named choices a configuration picks from, and the limits on what can be built.

    >>> parse_topology("T4"), topology_name((256, 128, 64))     # (256, 128, 64), 'T4'
    >>> canonical_name("LeakyReLU", ACTIVATIONS, "activation")  # 'leaky_relu'
    >>> check_buildable((100_000, 100_000))                     # UserError: layer 100000x100000 ...

The paper's five topologies, activations and optimizers under the names it prints; the wider
space's schedules, kernels and augmentations; the bounds (weights per layer, hidden layers, seeds)
that refuse a shape before anything tries to allocate it. `hpstudy.config.config.Config` checks
its fields against them, `hpstudy.config.factors` parses a study's values with them, and the
engine reads the constants it trains with (LeakyReLU's slope, StepLR's gamma, the shift).
"""

from __future__ import annotations

import itertools

from hpstudy.errors import UserError

N_INPUTS = 784  # 28 x 28 pixels: FashionMNIST's, the default
N_CLASSES = 10

# The paper's five topologies, as hidden-layer widths.
TOPOLOGIES: dict[str, tuple[int, ...]] = {
    "T1": (128,),
    "T2": (256, 128),
    "T3": (512, 256),
    "T4": (256, 128, 64),
    "T5": (1024, 512),
}

# Canonical lower-case names -> the names the paper prints.
ACTIVATIONS: dict[str, str] = {
    "relu": "ReLU",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "leaky_relu": "LeakyReLU",
    "elu": "ELU",
}
LEAKY_RELU_SLOPE = 0.01

OPTIMIZERS: dict[str, str] = {"sgd": "SGD", "adam": "Adam", "rmsprop": "RMSprop"}

# Learning-rate schedules, stepped once per epoch as torch.optim.lr_scheduler would be:
# constant (none), cosine = CosineAnnealingLR(T_max=max_epochs), step = StepLR(step_size, gamma).
SCHEDULES: dict[str, str] = {"constant": "constant", "cosine": "cosine", "step": "step"}
STEP_GAMMA = 0.1  # StepLR: the rate falls tenfold at a third and two thirds of max_epochs


def step_size(max_epochs: int) -> int:
    """StepLR's step_size for `schedule = "step"`: a third of max_epochs (at least 1)."""
    return max(1, round(max_epochs / 3))


KERNEL_SIZES = (3, 5)  # CNN: square kernels, "same" padding
MAX_CONVS_PER_BLOCK = 3  # CNN: convolutions before each block's pooling (VGG's blocks have 2-3)

# Training-image augmentation (engine/augment.py): random horizontal flips, random shifts of up
# to 2 pixels, or both; images only (square inputs), never applied to evaluation images.
MAX_SHIFT = 2  # pixels a `shift` moves an image, at most, each way in each direction
AUGMENTATIONS: dict[str, str] = {
    "none": "none", "flip": "flip", "shift": "shift", "flip_shift": "flip_shift"
}  # fmt: skip

# What can be built: a population stacks M copies of every layer, so one layer of 10^8
# weights is already 400 MB per member in float32; seeds go to torch as 64-bit integers.
MAX_LAYER_WEIGHTS = 100_000_000
MAX_HIDDEN_LAYERS = 64
MAX_SEED = 2**63 - 1


def canonical_name(name: str, choices: dict[str, str], what: str) -> str:
    """The key of `choices` that `name` means ('LeakyReLU', 'leaky-relu', 'leakyrelu')."""
    key = str(name).strip().lower().replace("-", "_")
    for canonical, display in choices.items():
        if key in (canonical, display.lower(), canonical.replace("_", "")):
            return canonical
    raise UserError(f"unknown {what} {name!r}; expected one of: {', '.join(choices.values())}")


def parse_topology(value: str | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """'T4', [256, 128, 64] or the full layer list [784, 256, 128, 64, 10] -> hidden widths."""
    if isinstance(value, str):
        name = value.strip().upper()
        if name in TOPOLOGIES:
            return TOPOLOGIES[name]
        raise UserError(
            f"unknown topology {value!r}; expected one of {', '.join(TOPOLOGIES)} "
            "or a list of hidden-layer widths such as [256, 128]"
        )
    sizes = tuple(value)
    if len(sizes) >= 2 and sizes[0] == N_INPUTS and sizes[-1] == N_CLASSES:
        sizes = sizes[1:-1]
    if not sizes or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes
    ):
        raise UserError(
            f"a topology needs at least one positive integer hidden width, got {list(value)!r}"
        )
    check_buildable(sizes)
    return sizes


def check_buildable(
    hidden: tuple[int, ...], n_inputs: int = N_INPUTS, n_classes: int = N_CLASSES
) -> None:
    """Refuse shapes no device could hold before anything tries to allocate them."""
    if len(hidden) > MAX_HIDDEN_LAYERS:
        raise UserError(f"a topology of {len(hidden)} hidden layers; at most "
                        f"{MAX_HIDDEN_LAYERS}: use fewer layers")  # fmt: skip
    layers = (n_inputs, *hidden, n_classes)
    for n_in, n_out in itertools.pairwise(layers):
        if n_in * n_out > MAX_LAYER_WEIGHTS:
            raise UserError(f"layer {n_in}x{n_out} has {n_in * n_out:,} weights; at most "
                            f"{MAX_LAYER_WEIGHTS:,} per layer (400 MB in float32): use "
                            "narrower layers")  # fmt: skip


def topology_name(hidden: tuple[int, ...]) -> str | None:
    """'T4' for the paper's (256, 128, 64); None for other shapes."""
    for name, sizes in TOPOLOGIES.items():
        if sizes == hidden:
            return name
    return None


def parse_conv(conv) -> tuple[int, ...]:
    """Convolution channels as a tuple of positive counts, at most MAX_HIDDEN_LAYERS of them;
    what depends on the image (a side that survives the poolings, layer sizes) is checked by
    Config once the data's shape is known."""
    if not isinstance(conv, list | tuple) or not all(
        isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in conv
    ):
        raise UserError(f"conv must be a list of positive channel counts, got conv={conv!r}")
    if len(conv) > MAX_HIDDEN_LAYERS:
        raise UserError(f"at most {MAX_HIDDEN_LAYERS} convolution blocks, got {len(conv)}")
    return tuple(conv)
