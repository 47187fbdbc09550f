"""Reusable layers: convolution, pooling, upsampling, attention, sampling grids, RoI ops, DRAW's
filterbanks."""
from segattn_jax.layers.attention import AdditiveAttention, expected_context, sampled_context
from segattn_jax.layers.conv import Conv, ConvBN, conv2d, conv2d_transpose
from segattn_jax.layers.filterbank import (
    GaussianWindow,
    Window,
    covering_params,
    filterbank,
    read_glimpse,
    window_from_params,
    write_patch,
)
from segattn_jax.layers.normalization import BatchNorm, FrozenBatchNorm, local_response_norm
from segattn_jax.layers.pooling import max_pool
from segattn_jax.layers.roi import roi_align, roi_pool
from segattn_jax.layers.sampling import bilinear_at
from segattn_jax.layers.spatial_transformer import (
    TRANSFORMS,
    SpatialTransformer,
    affine_grid,
    bilinear_sample,
    identity_params,
    params_to_grid,
    pixel_centers,
    projective_grid,
    tps_control_points,
    tps_grid,
    tps_interpolation_matrix,
)
from segattn_jax.layers.upsampling import (
    ConvTranspose,
    bed_of_nails,
    bilinear_init,
    bilinear_kernel,
    conv_transpose,
    conv_transpose_cropped,
    conv_transpose_lax,
    conv_transpose_window,
    max_pool_with_argmax,
    max_unpool,
    nearest_upsample,
    pad_for_pooling,
    pooled_size,
)
