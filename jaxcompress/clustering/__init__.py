"""jaxcompress.clustering: Deep Compression weight sharing (1-D k-means), centroid fine-tuning,
Huffman coding and size accounting.

``jaxcompress.quantization.dequantize`` turns a :class:`ClusteredArray` back into weights (it is
re-exported here for convenience).
"""

from jaxcompress.clustering._clustered import (
    INITS,
    ClusteredArray,
    cluster,
    cluster_array,
    validate_clustered_array,
)
from jaxcompress.clustering._deep_compression import deep_compression_sizes
from jaxcompress.clustering._finetune import (
    CentroidFinetuningState,
    centroid_finetuning,
    shared_params,
    update_codebooks,
)
from jaxcompress.clustering._huffman import (
    HuffmanCode,
    huffman_bits,
    huffman_code,
    huffman_decode,
    huffman_encode,
)
from jaxcompress.clustering._size import LeafSize, SizeReport, size_report
from jaxcompress.quantization._quantize import dequantize, dequantize_params

__all__ = [
    "deep_compression_sizes",
    "INITS",
    "CentroidFinetuningState",
    "ClusteredArray",
    "HuffmanCode",
    "LeafSize",
    "SizeReport",
    "centroid_finetuning",
    "cluster",
    "cluster_array",
    "dequantize",
    "dequantize_params",
    "huffman_bits",
    "huffman_code",
    "huffman_decode",
    "huffman_encode",
    "shared_params",
    "size_report",
    "update_codebooks",
    "validate_clustered_array",
]
