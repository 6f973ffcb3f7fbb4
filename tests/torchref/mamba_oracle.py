"""mamba_ssm's own Mamba2 module as a CPU oracle (reference/ssm_gnn_anchors.md §0 point 1).

mamba_ssm's forward calls Triton kernels for the SSD scan and the gated RMSNorm, which need a GPU.
On CPU we run the *official module* (its in_proj, split, conv, dt/A handling, D, out_proj) and
swap only those two kernels for mamba_ssm's own pure-torch references:
- `mamba_chunk_scan_combined` -> `reference_chunk_scan_combined` below, built on
  `mamba_ssm.modules.ssd_minimal.ssd_minimal_discrete` (Listing 1 of Dao & Gu 2024) plus the
  kernel's dt handling (`_chunk_cumsum_fwd_kernel`: dt + dt_bias, softplus, clamp to dt_limit,
  dt = 0 beyond seqlen) and the D skip term;
- `RMSNormGated.forward` -> `mamba_ssm.ops.triton.layernorm_gated.rms_norm_ref`.

    ns = import_mamba_ssm()                    # raises ImportError when mamba_ssm is absent
    official = official_mamba2(ns, 64, 16, 4, 2, 8)
    with reference_kernels(ns):
        out = official(u)
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import types

import torch
import torch.nn.functional as F
from einops import repeat

from torchref.mamba import import_upstream_mamba2


def import_mamba_ssm() -> types.SimpleNamespace:
    """Import the mamba_ssm pieces the oracle needs. Without its CUDA extension (a CPU build),
    `selective_scan_cuda` (Mamba-1's kernel, imported at package import, never called here) is
    stubbed with an empty module; a real one is left alone."""
    import_upstream_mamba2()
    mamba2 = importlib.import_module("mamba_ssm.modules.mamba2")
    ssd_minimal = importlib.import_module("mamba_ssm.modules.ssd_minimal")
    layernorm_gated = importlib.import_module("mamba_ssm.ops.triton.layernorm_gated")
    return types.SimpleNamespace(
        Mamba2=mamba2.Mamba2,
        mamba2_module=mamba2,
        RMSNormGated=layernorm_gated.RMSNorm,
        rms_norm_ref=layernorm_gated.rms_norm_ref,
        ssd_minimal_discrete=ssd_minimal.ssd_minimal_discrete,
    )


def official_mamba2(ns, d_model, d_state, d_conv=4, expand=2, headdim=64, chunk_size=16, dtype=None):
    """The official module on its unfused path (`use_mem_eff_path=False`): the one we can patch."""
    return ns.Mamba2(
        d_model, d_state=d_state, d_conv=d_conv, expand=expand, headdim=headdim,
        chunk_size=chunk_size, use_mem_eff_path=False, dtype=dtype,
    )


def make_reference_chunk_scan_combined(ns):
    """A drop-in for `mamba_chunk_scan_combined` (same signature) on `ssd_minimal_discrete`."""

    def reference_chunk_scan_combined(
        x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
        cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False,
        return_varlen_states=False,
    ):
        if z is not None or initial_states is not None or seq_idx is not None or cu_seqlens is not None:
            raise NotImplementedError("the CPU oracle covers the plain training path only")
        if return_varlen_states:
            raise NotImplementedError("varlen states are not part of the oracle")
        batch, length, heads, _ = x.shape
        # The kernel keeps dt in float32 ("high precision before cumsum"); float64 stays float64
        # here (the Triton kernel accepts no float64, so there is nothing to copy there).
        dt = dt.to(torch.promote_types(dt.dtype, torch.float32))
        if dt_bias is not None:
            dt = dt + dt_bias
        if dt_softplus:
            dt = F.softplus(dt)  # threshold 20, as the kernel's `where(dt <= 20, softplus(dt), dt)`
        if dt_limit != (0.0, float("inf")):
            dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])
        dtype = torch.promote_types(x.dtype, dt.dtype)
        pad = -length % chunk_size  # dt = 0 (post-softplus), x = B = C = 0 beyond seqlen
        xp = F.pad(x, (0, 0, 0, 0, 0, pad)).to(dtype)
        dtp = F.pad(dt, (0, 0, 0, pad)).to(dtype)
        Bh = repeat(F.pad(B, (0, 0, 0, 0, 0, pad)), "b l g n -> b l (g r) n", r=heads // B.shape[2]).to(dtype)
        Ch = repeat(F.pad(C, (0, 0, 0, 0, 0, pad)), "b l g n -> b l (g r) n", r=heads // C.shape[2]).to(dtype)
        y, final_state = ns.ssd_minimal_discrete(xp * dtp[..., None], A.to(dtype) * dtp, Bh, Ch, chunk_size)
        y = y[:, :length]
        if D is not None:
            y = y + x * (D[:, None] if D.dim() == 1 else D)
        y = y.to(x.dtype)
        return (y, final_state) if return_final_states else y

    return reference_chunk_scan_combined


def _rms_norm_gated_ref_forward(rms_norm_ref):
    def forward(self, x, z=None):
        return rms_norm_ref(
            x, self.weight, self.bias, z=z, eps=self.eps, group_size=self.group_size,
            norm_before_gate=self.norm_before_gate, upcast=True,
        )

    return forward


@contextlib.contextmanager
def official_casts(mixer):
    """Within the block, torchref's Mamba2 `mixer` repeats the official module's two float32 casts,
    `A = -exp(A_log.float())` and the gated norm's upcast, so that a float64 comparison with the
    official module measures everything else at float64 precision."""
    import torchref.mamba as torchref_mamba

    saved_scan, saved_norm = torchref_mamba.selective_scan, torchref_mamba.gated_rms_norm

    def scan_with_float32_A(x, dt, A, B, C, scan, chunk_size):
        A = -torch.exp(mixer.A_log.float()).to(x.dtype)
        return saved_scan(x, dt, A, B, C, scan, chunk_size)

    def norm_in_float32(y, z, weight, eps):
        return saved_norm(y.float(), z.float(), weight.float(), eps).to(y.dtype)

    torchref_mamba.selective_scan = scan_with_float32_A
    torchref_mamba.gated_rms_norm = norm_in_float32
    try:
        yield
    finally:
        torchref_mamba.selective_scan = saved_scan
        torchref_mamba.gated_rms_norm = saved_norm


@contextlib.contextmanager
def reference_kernels(ns):
    """Within the block, official Mamba2 modules run on CPU through mamba_ssm's torch references."""
    module = ns.mamba2_module
    saved_scan, saved_norm = module.mamba_chunk_scan_combined, ns.RMSNormGated.forward
    module.mamba_chunk_scan_combined = make_reference_chunk_scan_combined(ns)
    ns.RMSNormGated.forward = _rms_norm_gated_ref_forward(ns.rms_norm_ref)
    try:
        yield
    finally:
        module.mamba_chunk_scan_combined = saved_scan
        ns.RMSNormGated.forward = saved_norm
