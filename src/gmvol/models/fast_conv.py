"""A dilated 3D convolution that is fast to train on CPU.

PyTorch's CPU (oneDNN) kernels compute a dilated Conv3d's output and its input gradient about as
fast as an undilated one, but its *weight* gradient falls back to an im2col GEMM that is 2-7x
slower (measured on 2 cores at 36x44x38, 16 channels: 33 ms vs 15 ms in fp32, 70 ms vs 11 ms in
bf16, where it makes AMP training 25x slower). So the forward pass and the input gradient use
oneDNN's own dilated kernels, and only the weight gradient is rearranged: a dilation-d
convolution is exactly a dilation-1 convolution applied independently to each of the d^3 phase
sub-grids x[..., a::d, b::d, c::d] ("space-to-batch"), so the input and the output gradient are
stacked that way (one copy each) and the fast undilated weight-gradient kernel runs on them.

Layout: oneDNN's direct kernels are fastest on channels_last_3d tensors. PyTorch's BatchNorm
backward is ~2x slower on them when the channel count does not fill its AVX-512 vectors (21
channels), but not at 16 channels. So when training, the convolution runs in channels_last
internally and by default hands back the layout it was given; a model whose width suits
channels_last sets ``channels_last_output`` and keeps the whole trunk in it, which spares those
copies (MeshNet does so at multiples of 16 channels). Without autograd (inference) the output
stays channels_last, the fastest inference layout (~1.7x faster than channels-first at 128^3).
Under CPU autocast (bf16) the convolution runs in the autocast dtype. On other devices this is a
plain Conv3d.
"""

from __future__ import annotations

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
    if x.is_contiguous(memory_format=_memory_format(channels_last)):
        return x
    return _Relayout.apply(x, channels_last)


def space_to_batch(x: torch.Tensor, dilation: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Stack the dilation^3 phase sub-grids of `x` (B, C, D, H, W) along the batch axis.

    The volume is zero-padded at the far end to a multiple of `dilation` (those voxels lie
    outside the image, where a 'same' convolution sees zeros anyway). Returns the stacked tensor
    (B * d^3, C, D/d, H/d, W/d) in `dtype` (default: x's), laid out channels_last_3d.
    """
    d = dilation
    b, c = x.shape[:2]
    pads = [(-n) % d for n in x.shape[2:]]
    if any(pads):
        x = F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]))
    q0, q1, q2 = (n // d for n in x.shape[2:])
    # Split each axis into (sub-grid index, phase); move the phases next to the batch axis.
    if is_channels_last(x):
        x = x.permute(0, 2, 3, 4, 1).reshape(b, q0, d, q1, d, q2, d, c).permute(0, 2, 4, 6, 1, 3, 5, 7)
    else:
        x = x.reshape(b, c, q0, d, q1, d, q2, d).permute(0, 3, 5, 7, 2, 4, 6, 1)
    stacked = x.reshape(b * d**3, q0, q1, q2, c).to(dtype or x.dtype)
    return stacked.permute(0, 4, 1, 2, 3)


class _DilatedConv3d(torch.autograd.Function):
    """'Same'-padded stride-1 dilated conv on channels_last tensors, computed in `dtype` (the
    autocast dtype, or the input's): oneDNN's kernels for the output and the input gradient,
    space-to-batch for the weight gradient. oneDNN's bf16 weight-gradient kernel returns garbage
    when the sub-grids are thinner than the kernel along their first axis (measured: depth 2
    with a 3-wide kernel, e.g. 13 voxels at dilation 8), so such layers compute it in the
    parameters' dtype (fp32). The bias gradient is a plain sum, in the parameters' dtype."""

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
            stacked_x = space_to_batch(x, d, dtype)
            stacked_grad = space_to_batch(grad, d, dtype)  # zero-padded like x: no output there
            grad_w = torch.ops.aten.convolution_backward(
                stacked_grad, stacked_x, kernel.to(dtype), None, [1] * 3, [size // 2] * 3, [1] * 3, False,
                [0] * 3, 1, [False, True, False])[1].to(ctx.param_dtype)
        if need_b:
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
