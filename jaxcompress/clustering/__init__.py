"""jaxcompress.clustering: Deep Compression weight sharing (1-D k-means), centroid fine-tuning,
Huffman coding and size accounting.

``dequantize`` / ``dequantize_params`` (the same functions as in ``jaxcompress.quantization``, from
the shared compressed-leaf protocol ``jaxcompress._core.CompressedArray``) turn a
:class:`ClusteredArray` back into weights. ``size_report`` counts the storage of any tree of
compressed leaves (quantized or clustered).
"""

from jaxcompress._core import dequantize, dequantize_params
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
