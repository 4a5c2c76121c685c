"""jaxcompress edge side: NumPy + Numba kernels and the artifact runtime. Never imports JAX.

Import name: ``jaxcompress_kernels`` (the folder is ``kernels/``; the PyPI name ``kernels`` belongs
to an unrelated project).
"""

from jaxcompress_kernels import reference
from jaxcompress_kernels.conv import (
    Conv2dWeight,
    DepthwiseConv2dWeight,
    Pool2d,
    avg_pool2d,
    conv2d,
    depthwise_conv2d,
    global_avg_pool2d,
    max_pool2d,
    prepare_avg_pool2d,
    prepare_conv2d,
    prepare_depthwise_conv2d,
    prepare_max_pool2d,
)
from jaxcompress_kernels.errors import (
    ArtifactError,
    DataError,
    JaxCompressError,
    JaxCompressTypeError,
    JaxCompressValueError,
)
from jaxcompress_kernels.formats import (
    BSRMatrix,
    CSRMatrix,
    Int8Weight,
    NMSparse,
    PackedWeight,
    bsr_from_dense,
    csr_from_dense,
    csr_from_quantized,
    int8_weight,
    nm_from_dense,
    nm_from_quantized,
    pack_weight,
    to_dense,
    unpack_weight,
)
from jaxcompress_kernels.packing import (
    from_matmulnbits,
    pack_bits,
    packed_size,
    to_matmulnbits,
    unpack_bits,
)
from jaxcompress_kernels.quantized import (
    Requantization,
    int8_x_block,
    qmatmul,
    qmatmul_int8,
    requantization,
)
from jaxcompress_kernels.runtime_config import get_num_threads, set_num_threads, warmup
from jaxcompress_kernels.sparse import spmm_bsr, spmm_csr, spmm_nm

__all__ = [
    "ArtifactError",
    "DataError",
    "JaxCompressError",
    "JaxCompressTypeError",
    "JaxCompressValueError",
    # containers and conversions
    "PackedWeight",
    "Int8Weight",
    "CSRMatrix",
    "NMSparse",
    "BSRMatrix",
    "pack_weight",
    "unpack_weight",
    "int8_weight",
    "csr_from_dense",
    "csr_from_quantized",
    "nm_from_dense",
    "nm_from_quantized",
    "bsr_from_dense",
    "to_dense",
    # bit packing and ONNX Runtime layout
    "pack_bits",
    "unpack_bits",
    "packed_size",
    "to_matmulnbits",
    "from_matmulnbits",
    # kernels
    "qmatmul",
    "int8_x_block",
    "qmatmul_int8",
    "Requantization",
    "requantization",
    "spmm_csr",
    "spmm_nm",
    "spmm_bsr",
    # convolutions and pooling (NHWC)
    "Conv2dWeight",
    "DepthwiseConv2dWeight",
    "Pool2d",
    "prepare_conv2d",
    "prepare_depthwise_conv2d",
    "prepare_max_pool2d",
    "prepare_avg_pool2d",
    "conv2d",
    "depthwise_conv2d",
    "max_pool2d",
    "avg_pool2d",
    "global_avg_pool2d",
    # runtime
    "set_num_threads",
    "get_num_threads",
    "warmup",
    "reference",
]
