"""Data parallelism on ``jax.sharding``: batch sharded along a ``"data"`` axis, params replicated.

There is no distribution layer here, only JAX's own pieces:

* :func:`data_mesh` is ``jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,))`` over all
  (global) devices. ``Auto`` matters: in jax 0.10 ``make_mesh`` defaults to ``Explicit`` axes,
  under which the compiler does not propagate shardings for us.
* :func:`shard_batch` / :func:`replicate` build global ``jax.Array``-s with
  ``jax.make_array_from_process_local_data``: each process passes the rows it loaded (its slice of
  the global batch) or, for replicated values, the whole value. On one process this is just a
  ``device_put`` onto the mesh.
* :func:`make_train_step` jits ``loss -> grad -> optax update``. With committed, sharded inputs XLA
  partitions the computation and inserts the gradient all-reduce itself, so the *same* step
  function runs on 1 device, N local devices or N hosts, and gives the single-device result up to
  float summation order. ``use_shard_map=True`` writes the per-shard program explicitly with
  ``jax.shard_map`` instead (see the note there about the gradient sum).

Multi-host: start one process per host (or per group of devices) and call, before anything else
touches JAX::

    jax.distributed.initialize(coordinator_address="10.0.0.1:1234", num_processes=P, process_id=i)

(on CPU the cross-process collectives use gloo, jax's default). Then ``data_mesh()`` spans every
process's devices, and each process feeds its own ``1/P`` of each global batch to
:func:`shard_batch` (``distill`` does this for you with :func:`process_slice`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcompress._core import JaxCompressValueError

__all__ = [
    "data_mesh",
    "make_train_step",
    "process_slice",
    "replicate",
    "shard_batch",
]

LossFn = Callable[..., jax.Array]


def data_mesh(devices: Any = None, *, axis_name: str = "data") -> Mesh:
    """A 1-D mesh with ``Auto`` sharding over ``devices`` (default: all global devices).

    Args:
      devices: a sequence of devices, or ``None`` for ``jax.devices()`` (every process's devices
        after ``jax.distributed.initialize``).
      axis_name: the data axis name.

    Returns:
      ``jax.sharding.Mesh`` of shape ``(len(devices),)``.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise JaxCompressValueError("devices must not be empty")
    return jax.make_mesh(
        (len(devices),), (axis_name,), axis_types=(AxisType.Auto,), devices=devices
    )


def process_slice(global_batch: int, mesh: Mesh) -> slice:
    """Rows of a global batch that this process loads and feeds to :func:`shard_batch`.

    Processes own contiguous, equal parts in ``jax.process_index()`` order (the mesh from
    :func:`data_mesh` lists devices process by process). One process: ``slice(0, global_batch)``.
    """
    n_proc = len({d.process_index for d in mesh.devices.flat})
    if global_batch % mesh.devices.size:
        raise JaxCompressValueError(
            f"{global_batch=} must be divisible by the number of devices ({mesh.devices.size})"
        )
    per = global_batch // n_proc
    i = jax.process_index() if n_proc > 1 else 0
    return slice(i * per, (i + 1) * per)


def _axis(mesh: Mesh) -> str:
    if len(mesh.axis_names) != 1:
        raise JaxCompressValueError(f"expected a 1-D data mesh, got axes {mesh.axis_names}")
    return mesh.axis_names[0]


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Put a (process-local) batch on ``mesh``, sharded along its leading axis.

    Args:
      batch: a pytree of arrays with leading axis ``b_local`` (this process's rows; on one process
        the whole batch). The global batch ``b_local * num_processes`` must be divisible by the
        number of devices.
      mesh: a 1-D mesh from :func:`data_mesh`.

    Returns:
      The same pytree of global ``jax.Array``-s with ``NamedSharding(mesh, P(axis))``.
    """
    sharding = NamedSharding(mesh, P(_axis(mesh)))
    n_dev = mesh.devices.size
    n_proc = len({d.process_index for d in mesh.devices.flat})

    def put(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if x.ndim == 0 or (x.shape[0] * n_proc) % n_dev:
            raise JaxCompressValueError(
                f"batch leaf of shape {tuple(x.shape)}: global batch {x.shape[0] if x.ndim else 0}"
                f" x {n_proc} process(es) must be divisible by the {n_dev} devices"
            )
        global_shape = (x.shape[0] * n_proc, *x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree.map(put, batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Replicate every array leaf of ``tree`` (params, optimizer state, keys) on ``mesh``.

    Every process must pass the same values (e.g. initialised from the same seed).
    """
    sharding = NamedSharding(mesh, P())

    def put(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.device_put(x, sharding)
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        return jax.make_array_from_process_local_data(sharding, np.asarray(x), x.shape)

    return jax.tree.map(put, tree)


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    mesh: Mesh | None = None,
    use_shard_map: bool = False,
    donate: bool = False,
) -> Callable[..., tuple[Any, Any, jax.Array]]:
    """Jitted ``step(params, opt_state, x, y, key, *extra) -> (params, opt_state, loss)``.

    ``loss, grads = value_and_grad(loss_fn)(params, x, y, key, *extra)``, then
    ``updates, opt_state = optimizer.update(grads, opt_state, params)`` and
    ``params = optax.apply_updates(params, updates)``. ``extra`` are replicated inputs that are not
    trained (e.g. the frozen teacher's params; passing them as arguments rather than closing over
    them keeps them out of the compiled program's constants).

    Args:
      loss_fn: ``loss_fn(params, x, y, key, *extra) -> scalar``, the mean over the batch.
      optimizer: any optax transformation (e.g. ``optax.chain(optax.adam(1e-3), pruning)``).
      mesh: ``None`` for a plain single-device jit; a mesh from :func:`data_mesh` to pin the
        shardings: ``x``, ``y`` sharded along the data axis (pass them through
        :func:`shard_batch`), everything else replicated (:func:`replicate`).
      use_shard_map: write the per-device program with ``jax.shard_map``: each device computes the
        gradient of its local mean loss. The gradient of a replicated (unvarying) input inside
        ``shard_map`` already comes back *summed* over the data axis (the transpose of the
        implicit ``pvary`` is a ``psum``), so it is divided by the axis size; an extra ``pmean``
        would give N times the gradient. The key is the same on every shard, so random ops
        (dropout) draw the same bits on every shard and differ from the jit path; use it for
        deterministic losses.
      donate: donate ``params`` and ``opt_state`` buffers to the update.

    Returns:
      The jitted step.
    """

    def _update(params, opt_state, grads):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    donate_argnums = (0, 1) if donate else ()

    if not use_shard_map:

        def step(params, opt_state, x, y, key, *extra):
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y, key, *extra)
            params, opt_state = _update(params, opt_state, grads)
            return params, opt_state, loss

        if mesh is None:
            return jax.jit(step, donate_argnums=donate_argnums)
        rep = NamedSharding(mesh, P())
        data = NamedSharding(mesh, P(_axis(mesh)))

        def sharded_step(params, opt_state, x, y, key, *extra):
            # The batch may arrive already sharded; the constraint pins it in any case.
            x = jax.lax.with_sharding_constraint(x, data)
            y = jax.lax.with_sharding_constraint(y, data)
            return step(params, opt_state, x, y, key, *extra)

        return jax.jit(sharded_step, out_shardings=(rep, rep, rep), donate_argnums=donate_argnums)

    if mesh is None:
        raise JaxCompressValueError("use_shard_map=True needs a mesh")
    axis = _axis(mesh)

    def local_grads(params, x, y, key, *extra):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, key, *extra)
        n = jax.lax.axis_size(axis)
        # grads of the replicated params are already psum-ed over `axis`: divide, never pmean.
        grads = jax.tree.map(lambda g: g / n, grads)
        return jax.lax.pmean(loss, axis), grads

    def smap_step(params, opt_state, x, y, key, *extra):
        extra_specs = tuple(P() for _ in extra)
        loss, grads = jax.shard_map(
            local_grads,
            mesh=mesh,
            in_specs=(P(), P(axis), P(axis), P(), *extra_specs),
            out_specs=(P(), P()),
        )(params, x, y, key, *extra)
        params, opt_state = _update(params, opt_state, grads)
        return params, opt_state, loss

    rep = NamedSharding(mesh, P())
    return jax.jit(smap_step, out_shardings=(rep, rep, rep), donate_argnums=donate_argnums)
