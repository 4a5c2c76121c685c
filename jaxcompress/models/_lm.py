"""A small character-level transformer language model (Flax nnx), for one-shot compression studies.

``CharLM`` maps token ids ``(batch, length)`` (int32, ``0 <= id < vocab``) to next-token logits
``(batch, length, vocab)``. It is a GPT-style decoder: token embedding + learned position embedding,
``layers`` pre-norm blocks ``h + MHA_causal(LN(h))`` then ``h + MLP_GELU(LN(h))`` (the project's
transformer block as in :class:`TinyTransformer`, with a causal mask), a final LayerNorm and an
untied Dense head. Every projection is a plain ``nnx.Linear`` so one-shot methods see each kernel as
a matmul site; attention is einsum + softmax.

Key paths (``nnx.state(model, nnx.Param)``): ``embed/embedding``, ``pos``,
``blocks/{i}/{ln1,q,k,v,o,ln2,mlp1,mlp2}/...``, ``ln_f/...``, ``head/kernel``.
:func:`char_lm_mappings` lists the (producer, consumers) pairs AWQ / SmoothQuant fold scales along.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcompress._core import JaxCompressValueError

__all__ = ["CharLM", "char_lm_mappings"]


class _Block(nnx.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, *, rngs: nnx.Rngs):
        self.heads = heads
        self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
        self.q = nnx.Linear(dim, dim, rngs=rngs)
        self.k = nnx.Linear(dim, dim, rngs=rngs)
        self.v = nnx.Linear(dim, dim, rngs=rngs)
        self.o = nnx.Linear(dim, dim, rngs=rngs)
        self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp1 = nnx.Linear(dim, mlp_dim, rngs=rngs)
        self.mlp2 = nnx.Linear(mlp_dim, dim, rngs=rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        b, t, d = h.shape
        hd = d // self.heads
        y = self.ln1(h)
        q = self.q(y).reshape(b, t, self.heads, hd)
        k = self.k(y).reshape(b, t, self.heads, hd)
        v = self.v(y).reshape(b, t, self.heads, hd)
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.float32(hd)).astype(q.dtype)
        causal = jnp.tril(jnp.ones((t, t), bool))
        s = jnp.where(causal, s, jnp.finfo(s.dtype).min)
        att = jax.nn.softmax(s, axis=-1)
        h = h + self.o(jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, t, d))
        return h + self.mlp2(jax.nn.gelu(self.mlp1(self.ln2(h))))


class CharLM(nnx.Module):
    """Character-level decoder-only transformer (see the module docstring).

    Args:
      vocab: number of token ids (128 for ASCII).
      context: maximum sequence length (size of the position embedding).
      dim: model width; ``heads`` must divide it.
      heads: attention heads.
      layers: number of blocks.
      mlp_dim: hidden width of each block's MLP.
      rngs: ``nnx.Rngs`` for initialization.

    Input ``(batch, length)`` int ids with ``length <= context``; output logits
    ``(batch, length, vocab)`` float32.

    Raises:
      JaxCompressValueError: ``dim`` not divisible by ``heads``.
    """

    def __init__(
        self,
        *,
        vocab: int = 128,
        context: int = 128,
        dim: int = 128,
        heads: int = 4,
        layers: int = 2,
        mlp_dim: int = 512,
        rngs: nnx.Rngs,
    ):
        if dim % heads:
            raise JaxCompressValueError(f"{dim=} must be divisible by {heads=}")
        self.context = context
        self.embed = nnx.Embed(vocab, dim, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (context, dim)))
        self.blocks = nnx.List([_Block(dim, heads, mlp_dim, rngs=rngs) for _ in range(layers)])
        self.ln_f = nnx.LayerNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, vocab, rngs=rngs)

    def __call__(self, ids: jax.Array, *, train: bool = False, rngs=None) -> jax.Array:
        del train, rngs
        t = ids.shape[1]
        h = self.embed(ids) + self.pos[...][:t]
        for blk in self.blocks:
            h = blk(h)
        return self.head(self.ln_f(h))


def char_lm_mappings(layers: int) -> list[tuple[str, str]]:
    """(producer, consumers) regex pairs of a :class:`CharLM` for AWQ / SmoothQuant folding.

    Per block ``i``: ``ln1 -> q, k, v``; ``ln2 -> mlp1``; ``v -> o`` (attention is linear in V).
    """
    out = []
    for i in range(layers):
        p = f"^blocks/{i}/"
        out += [
            (p + "ln1/(scale|bias)$", p + "(q|k|v)/kernel$"),
            (p + "ln2/(scale|bias)$", p + "mlp1/kernel$"),
            (p + "v/(kernel|bias)$", p + "o/kernel$"),
        ]
    return out
