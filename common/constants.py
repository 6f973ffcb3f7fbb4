"""The model's numbers, in one place for both twins (jaxbrr/ and torchref/ import them; neither
keeps a copy). Framework-neutral: plain Python numbers.
"""

# -- initialisation ------------------------------------------------------------------------------
# The original's conservative gains (original_spec.md §2 "Init", §7.1: the edge lift's was lowered
# from 0.5 to 0.1 during its NaN hunt). model.tcn.init_gain overrides the TCN's.
CONV_GAIN = 0.2  # TCN convolutions, Kaiming-uniform × gain
HEAD_GAIN = 0.01  # the head's 19 -> 1 detector
TO_ELECTRODES_GAIN = 0.1
FROM_ELECTRODES_GAIN = 0.05
EDGE_LIFT_GAIN = 0.1
# mamba_ssm Mamba2's init of dt_bias and A_log (mamba_ssm/modules/mamba2.py), and its gated
# RMSNorm's eps.
DT_MIN, DT_MAX, DT_INIT_FLOOR = 1e-3, 0.1, 1e-4
A_INIT_RANGE = (1.0, 16.0)
MAMBA_NORM_EPS = 1e-5

# -- numerics ------------------------------------------------------------------------------------
# torch's F.softplus (and mamba_ssm's Triton kernel) return x itself above this.
SOFTPLUS_THRESHOLD = 20.0
# Cosine similarity divides by max(‖a‖, eps)·max(‖b‖, eps), the per-norm clamp of
# torch.nn.functional.cosine_similarity, with the same eps (parity_nan_anchors.md §4.4).
COSINE_EPS = 1e-8
# Pearson correlation divides by sqrt(‖a − mean a‖² + eps)·sqrt(‖b − mean b‖² + eps): the
# original's own formula (brain-go-brr v2 src/brain_brr/models/edge_features.py,
# edge_scalar_series), an additive eps, so centred norms near 1e-4 and below are damped, not
# clamped. Finite with a finite gradient everywhere, a constant electrode included.
CORRELATION_EPS = 1e-8
# fix_signs(`max_abs`): |·| within this of a column's largest are ties, resolved by the first
# index. Above float32 eigh noise across frameworks (≈1e-6, up to 1e-4 near small gaps).
SIGN_TIE_TOLERANCE = 1e-4
PE_SIGNS = ("sum", "max_abs")
PE_GRADIENTS = ("full", "stop", "safe")
# model.ssm.scan (jaxbrr/ssm.py, torchref/ssm.py). pallas is chunked fused into Pallas kernels in jaxbrr
# (jaxbrr/ssd_kernel.py, jaxbrr/norm_kernel.py, GPU only); torchref computes it as chunked (its fused
# kernels: ssm.backend cuda).
SCANS = ("chunked", "sequential", "chunked_mask_after_exp", "pallas")

# -- stability.guards: original (original_spec.md §2 and §7.1) --------------------------------------
GUARD_MODEL_INPUT = 10.0  # nan_to_num + clamp of the model's input
GUARD_INPUT, GUARD_PROJ, GUARD_OUTPUT = 10.0, 5.0, 10.0  # each BiMamba2 layer: input, after proj, output
GUARD_HEAD, GUARD_LOGITS = 50.0, 100.0  # before the detector, and the logits
GUARD_EDGE_LIFT = 3.0  # after the edge lift
ORIGINAL_EDGE_CLAMP = 0.99  # cosine similarity clamped to ±0.99
ORIGINAL_DEGREE_FLOOR = 1e-6  # degrees clamped at 1e-6 before D^-1/2
ORIGINAL_COND_LIMIT = 1e6  # a Laplacian with cond > 1e6 is "ill-conditioned" ...
ORIGINAL_ILL_CONDITIONED_EPSILON = 1e-3  # ... and gets +1e-3·I instead of +epsilon·I
