"""A dilated 3D convolution that is fast to train on CPU.

PyTorch's CPU (oneDNN) kernels compute a dilated Conv3d's output and its input gradient about as
fast as an undilated one, but its *weight* gradient falls back to a much slower im2col GEMM,
slowest under bf16 autocast (timings in benchmarks/README.md, "Why the fast path"). So the forward pass and the input gradient use
oneDNN's own dilated kernels, and only the weight gradient is rearranged: a dilation-d
convolution is exactly a dilation-1 convolution applied independently to each of the d^3 phase
sub-grids x[..., a::d, b::d, c::d] ("space-to-batch"), so the input and the output gradient are
rearranged that way (one copy each) and the fast undilated weight-gradient kernel runs on them,
with its bias gradient from the same call. The width phases go side by side, zero-separated,
rather than onto the batch axis: the kernel is faster per voxel on long rows.

Layout: oneDNN's direct kernels are fastest on channels_last_3d tensors. PyTorch's BatchNorm
backward is slower on them when the channel count does not fill its AVX-512 vectors (21
channels), but not at 16 channels. So when training, the convolution runs in channels_last
internally and by default hands back the layout it was given; a model whose width suits
channels_last sets ``channels_last_output`` and keeps the whole trunk in it, which spares those
copies (MeshNet does so at multiples of 16 channels). Without autograd (inference) the output
stays channels_last, the fastest inference layout.
Under CPU autocast (bf16) the convolution runs in the autocast dtype. On other devices this is a
plain Conv3d.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

CHANNELS_LAST = torch.channels_last_3d


def is_channels_last(x: torch.Tensor) -> bool:
    """True if `x` is laid out channels_last_3d (and not also plainly contiguous)."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=CHANNELS_LAST)


def _memory_format(channels_last: bool) -> torch.memory_format:
    return CHANNELS_LAST if channels_last else torch.contiguous_format


class _Relayout(torch.autograd.Function):
    """Copy to another memory layout; the backward copies the gradient back to the input's layout
    (``Tensor.contiguous`` would pass it through in the new layout, slowing BatchNorm/ReLU)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
        ctx.input_channels_last = is_channels_last(x)
        return x.contiguous(memory_format=_memory_format(channels_last))

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.contiguous(memory_format=_memory_format(ctx.input_channels_last)), None


def relayout(x: torch.Tensor, *, channels_last: bool) -> torch.Tensor:
    """`x` in the asked memory layout, with its gradient returned in `x`'s own layout."""
    if channels_last and x.shape[1] == 1 and x.is_contiguous():
        # One channel: both layouts at once, and oneDNN reads the strides to pick its output's
        # layout; channels_last strides (a view) make it answer channels_last, sparing a copy.
        _, _, *spatial = x.shape
        return x.as_strided(x.shape, (math.prod(spatial), 1, spatial[1] * spatial[2], spatial[2], 1))
    if x.is_contiguous(memory_format=_memory_format(channels_last)):
        return x
    return _Relayout.apply(x, channels_last)


def _axis_blocks(length: int, dilation: int) -> list[tuple[slice, slice, slice]]:
    """(voxels, phases, slots) of one axis: voxel j * dilation + p is phase p's slot j. The first
    block holds the slots every phase fills, the second the last, partial slot."""
    full, rest = divmod(length, dilation)
    blocks = [(slice(0, full * dilation), slice(0, dilation), slice(0, full))] if full else []
    if rest:
        blocks.append((slice(full * dilation, length), slice(0, rest), slice(full, full + 1)))
    return blocks


def _axis_gaps(length: int, dilation: int) -> list[tuple[slice, slice]]:
    """(phases, slots) of one axis that hold no voxel, i.e. zeros."""
    full, rest = divmod(length, dilation)
    return [(slice(0, rest), slice(full + 1, None)), (slice(rest, None), slice(full, None))]


def space_to_batch(x: torch.Tensor, dilation: int, *, gap: int = 1, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Rearrange `x` (B, C, D, H, W) so that a dilation-d 'same' convolution of it is an undilated
    one: depth and height phase sub-grids x[..., a::d, b::d, :] are stacked along the batch axis,
    and within each, the d width phases are laid side by side, each followed by at least `gap`
    zeros.

    The zeros keep neighbouring width phases apart for a kernel up to 2 * gap + 1 wide, and pad
    the far end of every axis where its length is not a multiple of d (voxels outside the image,
    which a 'same' convolution sees as zeros anyway). Width phases go side by side instead of onto
    the batch axis because oneDNN's weight-gradient kernel runs faster per voxel on long rows
    than on d^3 tiny sub-grids (5x6x5 at dilation 8 of the default grid).
    Returns (B * d^2, C, ceil(D/d), ceil(H/d), d * (ceil(W/d) + gap)) in `dtype` (default: x's),
    channels_last_3d, written by one copy per block of voxels (no padded intermediate).
    """
    d = dilation
    b, c, *shape = x.shape
    slots = [-(-n // d) for n in shape]
    slots[2] += gap
    # (B, depth phase, height phase, depth slot, height slot, width phase, width slot, C)
    stacked = torch.empty(b, d, d, slots[0], slots[1], d, slots[2], c, dtype=dtype or x.dtype, device=x.device)
    phase_dims, slot_dims = (1, 2, 5), (3, 4, 6)
    for axis, n in enumerate(shape):
        for phases, empty in _axis_gaps(n, d):
            index = [slice(None)] * stacked.dim()
            index[phase_dims[axis]], index[slot_dims[axis]] = phases, empty
            stacked[tuple(index)].zero_()
    channels_last = x.permute(0, 2, 3, 4, 1)  # a view: (B, D, H, W, C)
    for blocks in itertools.product(*(_axis_blocks(n, d) for n in shape)):
        voxels, split = [], [b]
        for axis_voxels, phases, axis_slots in blocks:
            voxels.append(axis_voxels)
            split += [axis_slots.stop - axis_slots.start, phases.stop - phases.start]  # voxel = slot * d + phase
        block = channels_last[:, voxels[0], voxels[1], voxels[2]].reshape(*split, c)
        (_, pd, sd), (_, ph, sh), (_, pw, sw) = blocks
        stacked[:, pd, ph, sd, sh, pw, sw].copy_(block.permute(0, 2, 4, 1, 3, 6, 5, 7))
    return stacked.reshape(b * d * d, slots[0], slots[1], d * slots[2], c).permute(0, 4, 1, 2, 3)


class _DilatedConv3d(torch.autograd.Function):
    """'Same'-padded stride-1 dilated conv on channels_last tensors, computed in `dtype` (the
    autocast dtype, or the input's): oneDNN's kernels for the output and the input gradient,
    space-to-batch for the weight gradient. oneDNN's bf16 weight-gradient kernel returns garbage
    when the sub-grids are thinner than the kernel along their first axis (measured: depth 2
    with a 3-wide kernel, e.g. 13 voxels at dilation 8), so layers with a sub-grid that thin
    along any axis (to be safe) compute it in the parameters' dtype (fp32). The bias gradient
    comes with the weight gradient, in the same dtype."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None, dilation: int, dtype: torch.dtype) -> torch.Tensor:
        x, kernel = x.to(dtype), weight.to(dtype)
        ctx.save_for_backward(x, kernel)
        ctx.dilation, ctx.param_dtype = dilation, weight.dtype
        return F.conv3d(x, kernel, None if bias is None else bias.to(dtype),
                        padding=dilation * (weight.shape[-1] // 2), dilation=dilation)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,
                 grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, kernel = ctx.saved_tensors
        d, size = ctx.dilation, kernel.shape[-1]
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad = grad.to(x.dtype).contiguous(memory_format=CHANNELS_LAST)
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, kernel, None, [1] * 3, [d * (size // 2)] * 3, [d] * 3, False, [0] * 3, 1,
                [True, False, False])[0]
        if need_w:
            thin = min(-(-n // d) for n in x.shape[2:]) < size
            dtype = ctx.param_dtype if thin else x.dtype
            stacked_x = space_to_batch(x, d, gap=size // 2, dtype=dtype)
            # zero-filled at the same places as stacked_x, so that no output falls there
            stacked_grad = space_to_batch(grad, d, gap=size // 2, dtype=dtype)
            # the bias gradient (a sum of the output gradient, padding adds zeros) comes from the
            # same kernel for free; a separate fp32 sum would cost a pass over memory
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                stacked_grad, stacked_x, kernel.to(dtype), [kernel.shape[0]] if need_b else None, [1] * 3,
                [size // 2] * 3, [1] * 3, False, [0] * 3, 1, [False, True, need_b])
            grad_w = grad_w.to(ctx.param_dtype)
            grad_b = None if grad_b is None else grad_b.to(ctx.param_dtype)
        elif need_b:
            grad_b = grad.sum(dim=(0, 2, 3, 4), dtype=ctx.param_dtype)
        return grad_x, grad_w, grad_b, None, None


class FastDilatedConv3d(nn.Conv3d):
    """Drop-in 'same'-padded, stride-1 Conv3d whose CPU training is fast at every dilation.

    It *is* an ``nn.Conv3d`` (same ``weight``/``bias`` parameters and state_dict keys), so
    checkpoints move freely between this module and a plain convolution; only ``forward`` differs,
    and only on CPU. Outputs and gradients equal the plain convolution's up to float rounding.
    When autograd records, the output keeps the input's memory layout; otherwise it is
    channels_last_3d.
    """

    channels_last_output: bool = False
    """Training on CPU: always answer channels_last_3d, instead of the input's layout."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 dilation: int = 1, bias: bool = True) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        super().__init__(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2),
                         dilation=dilation, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        if not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            # No backward to pay for: oneDNN's own dilated forward kernel is fast, and without
            # BatchNorm backward channels_last is the fastest layout end to end.
            return relayout(super().forward(relayout(x, channels_last=True)), channels_last=True)
        channels_last = self.channels_last_output or is_channels_last(x)
        x = relayout(x, channels_last=True)
        if self.dilation[0] == 1:
            return relayout(super().forward(x), channels_last=channels_last)
        # computed in the autocast dtype as autocast would; the Function itself runs outside it
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        with torch.autocast("cpu", enabled=False):
            y = _DilatedConv3d.apply(x, self.weight, self.bias, self.dilation[0], dtype)
        return relayout(y, channels_last=channels_last)
