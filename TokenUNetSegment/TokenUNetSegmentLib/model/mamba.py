"""Mamba, the selective state-space sequence mixer: pure PyTorch on CPU, ``mamba_ssm`` kernels on CUDA.

Reference: Gu, Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", arXiv 2312.00752.
The parameters carry the names of ``mamba_ssm.Mamba`` (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``,
``A_log``, ``D``, ``out_proj``), so one set of weights serves both paths.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

_SCAN_CHUNK = 16
"""Time steps whose decays are computed at once by :func:`selective_scan`."""


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """The selective scan of Mamba, step by step in float32 (same arguments as ``mamba_ssm``'s kernel).

    ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = C_t h_t + D u_t``, then ``y * silu(z)``.

    Args:
        u: inputs (N, d, L).
        delta: step sizes (N, d, L), before ``delta_bias`` and softplus.
        A: state matrix (d, n), negative for a stable scan.
        B: input projections (N, n, L).
        C: output projections (N, n, L).
        D: skip weights (d,).
        z: gate (N, d, L).
        delta_bias: added to ``delta`` (d,).
        delta_softplus: apply softplus to ``delta`` (after the bias).

    Returns:
        y (N, d, L) in the dtype of ``u``.
    """
    dtype = u.dtype
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    # Time first, so that each step reads contiguous memory; chunks of time bound the memory.
    delta_t, u_t = delta.permute(2, 0, 1), u.permute(2, 0, 1)  # (L, N, d)
    B_t, C_t = B.permute(2, 0, 1), C.permute(2, 0, 1)  # (L, N, n)
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    outputs = []
    for start in range(0, u.shape[-1], _SCAN_CHUNK):
        steps = slice(start, start + _SCAN_CHUNK)
        decay = (delta_t[steps, ..., None] * A).exp_()  # (T, N, d, n)
        drive = (delta_t[steps] * u_t[steps])[..., None] * B_t[steps, :, None, :]
        if torch.is_grad_enabled():
            states = []
            for t in range(decay.shape[0]):
                state = torch.addcmul(drive[t], decay[t], state)
                states.append(state)
            states = torch.stack(states)
        else:  # inference: the states overwrite the drive terms in place
            for t in range(decay.shape[0]):
                state = drive[t].addcmul_(decay[t], state)
            states = drive
        outputs.append(torch.einsum("tndk,tnk->ndt", states, C_t[steps]))
    y = torch.cat(outputs, dim=-1)
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)


@functools.cache
def cuda_selective_scan():
    """``mamba_ssm``'s fused CUDA selective scan, or None when ``mamba_ssm`` is not installed."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return None
    return selective_scan_fn


class Mamba(nn.Module):
    """One Mamba block (one direction) mapping (N, L, d_model) sequences to (N, L, d_model).

    Runs the pure-PyTorch :func:`selective_scan` on CPU (deterministic), and ``mamba_ssm``'s CUDA kernel
    when the input is on CUDA and ``mamba_ssm`` is installed (unless ``use_cuda_kernel=False``).

    Args:
        d_model: channels of the sequence.
        d_state: size of the state per channel (16 in Mamba).
        d_conv: kernel size of the causal depthwise convolution.
        expand: inner width as a multiple of ``d_model``.
        dt_rank: rank of the step-size projection; ``"auto"`` gives ``ceil(d_model / 16)``.
        dt_min, dt_max: range of the initial step sizes (log-uniform).
        use_cuda_kernel: use ``mamba_ssm`` on CUDA when available.

    Examples::

        mixer = Mamba(48)
        y = mixer(torch.randn(8, 20, 48))  # (8, 20, 48), causal along the 20 steps
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        use_cuda_kernel: bool = True,
    ) -> None:
        super().__init__()
        d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.use_cuda_kernel = use_cuda_kernel
        self.out_features = d_model
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
            dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=1e-4)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        u, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)
        u = F.silu(self.conv1d(u)[..., :length])
        dt, B, C = self.x_proj(u.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)
        scan = cuda_selective_scan() if self.use_cuda_kernel and x.is_cuda else None
        y = (scan or selective_scan)(
            u.contiguous(),
            delta.contiguous(),
            -torch.exp(self.A_log.float()),
            B.transpose(1, 2).contiguous(),
            C.transpose(1, 2).contiguous(),
            self.D.float(),
            z=z.contiguous(),
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )
        return self.out_proj(y.transpose(1, 2))
