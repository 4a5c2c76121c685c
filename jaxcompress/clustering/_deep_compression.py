"""Deep Compression storage accounting (Han et al. 2016): the pruned, clustered and Huffman-coded
sizes of a model, counted the way the paper counts them."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxcompress._core import named_leaves

__all__ = ["deep_compression_sizes"]


def _relative_positions(flat_nz: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Deep Compression's relative sparse index: gaps stored in ``index_bits``; a gap larger than
    ``2**index_bits`` gets filler zeros. Returns (entry positions incl. fillers, gaps - 1)."""
    span = 1 << index_bits
    pos = np.flatnonzero(flat_nz)
    entries = []
    prev = -1
    for p in pos.tolist():
        while p - prev > span:  # filler zero
            prev += span
            entries.append(prev)
        entries.append(p)
        prev = p
    e = np.asarray(entries, np.int64)
    gaps = np.diff(np.concatenate([[-1], e])) - 1 if e.size else np.zeros(0, np.int64)
    return e, gaps


def deep_compression_sizes(
    pruned: Any, clustered: Any, *, index_bits: int = 5, cluster_bits: int = 5
) -> dict:
    """Storage of the pruned, clustered and Huffman-coded model the way Deep Compression counts it.

    Pruned kernels are stored as a stream (output-channel major: ``W.T`` row-major) of entries
    with a relative index of ``cluster.index_bits`` bits (filler zeros when a gap exceeds
    ``2**index_bits``, Han et al. 2016 Fig. 2); after pruning each entry carries a float32 value,
    after clustering a ``bits``-bit codebook index (+ one float32 codebook per layer), after
    Huffman both the indices and the relative positions are Huffman coded (measured stream
    lengths plus an 8-bit code-length table per symbol). Biases stay float32 throughout.
    KB = 1000 bytes (the paper's 1070 KB is 266,610 float32 parameters).

    Args:
      pruned: the pruned float params pytree (kernels with zeros).
      clustered: the same model after clustering (`ClusteredArray` leaves where clustered).
      index_bits: bits of the relative sparse index (Han et al.: 5 for fc layers).
      cluster_bits: bits of a cluster index (``log2`` of the codebook size).

    Returns:
      ``{"dense_kb", "pruned_kb", "clustered_kb", "huffman_kb", "ratio_pruned",
      "ratio_clustered", "ratio_huffman", "layers": [...]}``; each layer row's bytes sum (with
      the float32 biases) to the totals.
    """
    from jaxcompress.clustering._huffman import huffman_bits
    from jaxcompress.quantization import dequantize_params

    ib = int(index_bits)
    cbits = int(cluster_bits)
    dense_bits = pruned_bits = clustered_bits = huffman_total = 0
    layers = []
    cl_leaves = _clustered_by_path(clustered)
    deq = dict(named_leaves(dequantize_params(clustered)))
    for path, w in named_leaves(pruned):
        w = np.asarray(w)
        dense_bits += 32 * w.size
        if w.ndim < 2:
            pruned_bits += 32 * w.size
            clustered_bits += 32 * w.size
            huffman_total += 32 * w.size
            continue
        wc = np.asarray(deq[path])
        flat = wc.reshape(-1, wc.shape[-1]).T.reshape(-1)  # output-channel major
        entries, gaps = _relative_positions(flat != 0, ib)
        n_e = entries.size
        ca = cl_leaves.get(path)
        if ca is not None:
            idx = np.asarray(ca.indices).reshape(-1, wc.shape[-1]).T.reshape(-1)[entries]
            k = int(ca.n_clusters)
            codebook_bits = 32 * int(np.size(ca.codebook))
        else:  # a kernel the clusterer did not select: 32-bit values
            idx, k, codebook_bits = None, 0, 0
        p_bits = n_e * (32 + ib)
        c_bits = n_e * ((cbits if idx is not None else 32) + ib) + codebook_bits
        if idx is not None and n_e:
            h_idx = huffman_bits(idx, alphabet_size=k) + 8 * k
        else:
            h_idx = n_e * 32
        h_pos = (huffman_bits(gaps, alphabet_size=1 << ib) + 8 * (1 << ib)) if n_e else 0
        h_bits = h_idx + h_pos + codebook_bits
        pruned_bits += p_bits
        clustered_bits += c_bits
        huffman_total += h_bits
        layers.append(
            {
                "path": path,
                "weights": int(w.size),
                "nonzero": int(np.count_nonzero(flat)),
                "entries_with_fillers": int(n_e),
                "kept_pct": 100 * np.count_nonzero(flat) / w.size,
                "pruned_bytes": p_bits / 8,
                "clustered_bytes": c_bits / 8,
                "huffman_bytes": h_bits / 8,
            }
        )
    kb = 8 * 1000
    return {
        "index_bits": ib,
        "cluster_bits": cbits,
        "dense_kb": dense_bits / kb,
        "pruned_kb": pruned_bits / kb,
        "clustered_kb": clustered_bits / kb,
        "huffman_kb": huffman_total / kb,
        "ratio_pruned": dense_bits / pruned_bits,
        "ratio_clustered": dense_bits / clustered_bits,
        "ratio_huffman": dense_bits / huffman_total,
        "layers": layers,
    }


def _is_clustered(x) -> bool:
    from jaxcompress.clustering._clustered import ClusteredArray

    return isinstance(x, ClusteredArray)


def _clustered_by_path(tree) -> dict:
    import jax

    from jaxcompress._core import key_path_str

    out = {}
    for kp, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_clustered)[0]:
        if _is_clustered(leaf):
            out[key_path_str(kp)] = leaf
    return out
