"""Meshes, batch/state placement and the two drivers of a per-device step, plus multi-host init.

A per-device step `step(state, batch) -> (state, metrics)` averages over the axis `DATA`. It
runs under either driver:

- `ShardMapDriver` (default): `jax.jit(jax.shard_map(step))` on a 1-D mesh of all devices of
  all processes; the batch is a global array sharded over `DATA`, the state replicated.
- `PmapDriver`: `jax.pmap(step, axis_name=DATA)` over this process's devices; state and batch
  carry a leading device axis.

Both drivers take the process-local numpy batch and give back host copies of the state, so the
training loop does not know which one runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from genart_jax import host_memory

DATA = "data"
PyTree = Any
Step = Callable[[PyTree, PyTree], tuple[PyTree, PyTree]]


class ParallelError(ValueError):
    """A parallel setup the user asked for that cannot run as given."""


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D data-parallel mesh over `devices` (default: all devices of all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devices), (DATA,))


def check_batch_divisible(global_batch: int, num_devices: int, num_processes: int = 1) -> int:
    """Per-device batch size; a clear error when the global batch does not split evenly."""
    if global_batch % num_devices:
        raise ParallelError(
            f"global batch size {global_batch} is not divisible by the {num_devices} devices; "
            f"set train.batch_size to a multiple of {num_devices} (e.g. "
            f"{max(num_devices, global_batch // num_devices * num_devices)})")
    if global_batch % num_processes:
        raise ParallelError(f"global batch size {global_batch} is not divisible by the "
                            f"{num_processes} processes")
    return global_batch // num_devices


def describe_devices() -> str:
    """One line saying which devices this run found, for the start of every run."""
    devs = jax.devices()
    kinds = sorted({d.device_kind for d in devs})
    return (f"JAX {jax.__version__}: {len(devs)} {jax.default_backend()} device(s) "
            f"[{', '.join(kinds)}] over {jax.process_count()} process(es); this is process "
            f"{jax.process_index()} with {jax.local_device_count()} local device(s)")


def detected_cluster(env: dict[str, str] | None = None) -> str | None:
    """'slurm' or 'tpu' when the environment is a multi-process job of that kind, else None."""
    env = os.environ if env is None else env
    if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1"))) > 1:
        return "slurm"
    if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
        return "tpu"
    return None


def maybe_initialize_distributed(coordinator: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> str:
    """Join a multi-process run when asked or when the environment describes one; returns how.

    Explicit: arguments (the CLI's --coordinator/--num-processes/--process-id) or
    GENART_COORDINATOR (host:port), GENART_NUM_PROCESSES, GENART_PROCESS_ID. Automatic:
    `jax.distributed.initialize()` with its own detection in a multi-task SLURM job or a
    multi-host Cloud TPU slice, or anywhere with GENART_DISTRIBUTED=auto (Open MPI, ...);
    GENART_DISTRIBUTED=off turns detection off. A peer that dies is noticed through missed
    heartbeats: the survivors exit with an error after GENART_HEARTBEAT_TIMEOUT seconds
    (default 100) instead of hanging in a collective.
    """
    env = os.environ
    coordinator = coordinator or env.get("GENART_COORDINATOR")
    timeouts = {"heartbeat_timeout_seconds": int(env.get("GENART_HEARTBEAT_TIMEOUT", 100)),
                "initialization_timeout": int(env.get("GENART_INIT_TIMEOUT", 300))}
    if coordinator:
        n = num_processes if num_processes is not None else env.get("GENART_NUM_PROCESSES")
        i = process_id if process_id is not None else env.get("GENART_PROCESS_ID")
        if n is None or i is None:
            raise ParallelError("a coordinator address needs the number of processes and this "
                                "process's id: --num-processes N --process-id I (or "
                                "GENART_NUM_PROCESSES / GENART_PROCESS_ID)")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=int(n),
                                   process_id=int(i), **timeouts)
        return "explicit"
    mode = env.get("GENART_DISTRIBUTED", "")
    if mode == "off":
        return "off"
    cluster = detected_cluster()
    if mode == "auto" or cluster:
        jax.distributed.initialize(**timeouts)
        return cluster or "auto"
    return "single"


def any_process(flag: bool) -> bool:
    """True on every process if `flag` is True on any (a collective: all processes call it)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array([flag], np.int32))))


# The key JAX's preemption sync manager (XLA's coordination service) watches for a preemption
# notice; its own SIGTERM notifier writes it, with the time as RFC 3339. The training loop's
# signal handler replaces that notifier, so it writes the key itself (tests/test_multihost.py
# checks that every process then reaches the same sync point).
PREEMPTION_NOTICE_KEY = "RECEIVED_PREEMPTION_NOTICE"


def _distributed_client() -> Any | None:
    """JAX's coordination-service client of a multi-process run, or None (no public API)."""
    from genart_jax.jax_compat import distributed_client

    return distributed_client()


def preemption_sync_available() -> bool:
    """Whether this multi-process run has JAX's preemption sync manager (on by default,
    `jax_enable_preemption_service`)."""
    from genart_jax.jax_compat import preemption_sync_manager

    return (jax.process_count() > 1 and _distributed_client() is not None
            and preemption_sync_manager() is not None)


def announce_preemption(signum: int = 15) -> bool:
    """Post a preemption notice for every process of the run (from a signal handler): each
    then reaches the same `preemption_sync` point. False where it could not be posted; a
    notice already posted (several processes signalled) counts as posted."""
    import datetime

    client = _distributed_client()
    if client is None:
        return False
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
    try:
        client.key_value_set(PREEMPTION_NOTICE_KEY, when)
    except Exception as e:  # noqa: BLE001 - the coordinator's error types are not public
        if "ALREADY_EXISTS" not in str(e):
            print(f"genart: warning: could not announce signal {signum} to the other "
                  f"processes ({e}); they stop at the next logged step", flush=True)
            return False
    return True


def preemption_sync(call: int) -> bool:
    """True on every process at the same call once any process got a preemption notice:
    JAX's sync point (the largest call any process has reached, plus one). Every process
    must ask at every call with the same increasing `call`; a few microseconds without a
    notice (a local flag)."""
    from jax.experimental import multihost_utils

    return multihost_utils.reached_preemption_sync_point(call)


def _host_copy(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def last_step(step_metrics: dict[str, np.ndarray]) -> dict[str, float]:
    """The last step's values of `get_step_metrics`, as floats."""
    return {k: float(v[-1]) for k, v in step_metrics.items()}


def fuse_steps(step: Step, k: int, unroll: bool = True) -> Step:
    """k steps in one compiled call: `lax.scan` over batches stacked on a leading axis of k;
    metrics come back stacked (k, ...). Removes the host dispatch between steps.

    `unroll` (see `unroll_fused_steps`) lays the k steps out one after another instead of in a
    while loop."""
    if k == 1:
        return step

    def fused(state, batches):
        return jax.lax.scan(step, state, batches, unroll=unroll)

    return fused


def unroll_fused_steps(convolutional: bool) -> bool:
    """Whether fused steps are unrolled: yes for convolutional models and on GPU/TPU; on XLA:CPU
    for matmul-only models only where freed host memory is kept (`host_memory`). Unrolled, the
    k steps' temporaries are k distinct buffers, page-faulted in again on every call unless the
    process keeps freed memory. Interleaved A/Bs of the MLP GAN at batch 256 (one-off script):
    without it, rolled 5307 against unrolled 4798 img/s (1 step per call: 5391); with it,
    unrolled 5434 against rolled 5308 (5330). bench_dcgan32 unrolled was faster either way (same
    kind of script): 314 against 233 img/s rolled without it, 315 against 98 with it."""
    return convolutional or jax.default_backend() != "cpu" or host_memory.is_kept()


class ShardMapDriver:
    """jit over shard_map on a Mesh: state replicated, batch sharded on `DATA`. With
    `steps_per_call=k` each call runs k steps on batches stacked on a leading axis."""

    name = "shard_map"

    def __init__(self, step: Step, mesh: Mesh | None = None, donate: bool = True,
                 steps_per_call: int = 1, unroll: bool = True):
        self.mesh = make_mesh() if mesh is None else mesh
        self.num_devices = self.mesh.size
        self.steps_per_call = steps_per_call
        lead = (None,) if steps_per_call > 1 else ()
        step = fuse_steps(step, steps_per_call, unroll)
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P(*lead, None, DATA))
        # check_vma=False gives the step pmap's semantics: gradients of replicated params are
        # local until the body's explicit `lax.pmean` (with check_vma=True, JAX would psum them
        # implicitly and the body's pmean would then scale them by the device count).
        mapped = jax.shard_map(step, mesh=self.mesh, in_specs=(P(), P(*lead, None, DATA)),
                               out_specs=(P(), P()), check_vma=False)
        self._step = jax.jit(mapped, donate_argnums=(0,) if donate else ())
        self._gather = None

    def init_state(self, init_fn: Callable[[jax.Array], PyTree], key: jax.Array) -> PyTree:
        """Create the state already replicated on the mesh (no host round trip)."""
        return jax.jit(init_fn, out_shardings=self.replicated)(key)

    def put_state(self, host_state: PyTree) -> PyTree:
        def put(x):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, self.replicated, lambda idx: x[idx])
        return jax.tree.map(put, host_state)

    def put_batch(self, local_batch: PyTree) -> PyTree:
        """Process-local arrays (d_steps, local_batch, ...) -> one global array per leaf."""
        if jax.process_count() == 1:  # the local batch is the global one: one call for all
            return jax.device_put(local_batch, self.batch_sharding)
        axis = 2 if self.steps_per_call > 1 else 1  # the batch axis

        def put(x):
            x = np.asarray(x)
            shape = list(x.shape)
            shape[axis] *= jax.process_count()
            return jax.make_array_from_process_local_data(self.batch_sharding, x, tuple(shape))
        return jax.tree.map(put, local_batch)

    def step(self, state: PyTree, batch: PyTree) -> tuple[PyTree, PyTree]:
        return self._step(state, batch)

    def put_dataset(self, arrays: PyTree) -> PyTree:
        """A whole (small) dataset, replicated on every device, for `gather_placed`."""
        return self.put_state(arrays)

    def gather_placed(self, dataset: PyTree, batch: PyTree) -> PyTree:
        """{"image": indices (group, local_batch), "label": ...}, placed by `put_batch` -> the
        sharded global batch, images gathered on the devices from the resident `dataset`."""
        if self._gather is None:
            self._gather = jax.jit(lambda data, idx: data[idx],
                                   out_shardings=self.batch_sharding)
        return dict(batch, image=self._gather(dataset, batch["image"]))

    def get_state(self, state: PyTree) -> PyTree:
        return _host_copy(state)

    def get_metrics(self, metrics: PyTree) -> dict[str, float]:
        """Metrics of the (last) step of a call, as floats."""
        return last_step(self.get_step_metrics(metrics))

    def get_step_metrics(self, metrics: PyTree) -> dict[str, np.ndarray]:
        """Metrics of every step of a call: one (steps_per_call,) float array per name."""
        return {k: np.asarray(v, np.float64).reshape(self.steps_per_call) for k, v in
                jax.device_get(metrics).items()}


class PmapDriver:
    """jax.pmap over this process's devices: a leading device axis on state and batch."""

    name = "pmap"

    def __init__(self, step: Step, devices: Sequence[jax.Device] | None = None,
                 donate: bool = True, steps_per_call: int = 1, unroll: bool = True):
        if jax.process_count() > 1:
            raise ParallelError("train.driver=pmap runs within one process; use "
                                "train.driver=shard_map for multi-process training")
        self.devices = list(jax.local_devices() if devices is None else devices)
        self.num_devices = len(self.devices)
        self.steps_per_call = steps_per_call
        self._step = jax.pmap(fuse_steps(step, steps_per_call, unroll), axis_name=DATA,
                              devices=self.devices, donate_argnums=(0,) if donate else ())

    def init_state(self, init_fn: Callable[[jax.Array], PyTree], key: jax.Array) -> PyTree:
        return self.put_state(jax.jit(init_fn)(key))

    def put_state(self, host_state: PyTree) -> PyTree:
        """One copy per device, sharded as jax.pmap's outputs are (a NamedSharding over the
        devices' axis): placed on one device, the second step would compile again."""
        n = self.num_devices
        sharding = NamedSharding(Mesh(np.array(self.devices), (DATA,)), P(DATA))
        return jax.tree.map(
            lambda x: jax.device_put(np.broadcast_to(np.asarray(x), (n, *np.shape(x))),
                                     sharding), host_state)

    def put_batch(self, local_batch: PyTree) -> PyTree:
        """([k,] d_steps, B, ...) -> (devices, [k,] d_steps, B / devices, ...), contiguous per
        device."""
        n = self.num_devices
        axis = 2 if self.steps_per_call > 1 else 1

        def split(x):
            x = np.asarray(x)
            b = x.shape[axis]
            x = x.reshape(*x.shape[:axis], n, b // n, *x.shape[axis + 1:])
            return np.moveaxis(x, axis, 0)
        return jax.tree.map(split, local_batch)

    def step(self, state: PyTree, batch: PyTree) -> tuple[PyTree, PyTree]:
        return self._step(state, batch)

    def get_state(self, state: PyTree) -> PyTree:
        return _host_copy(jax.tree.map(lambda x: x[0], state))

    def get_metrics(self, metrics: PyTree) -> dict[str, float]:
        return last_step(self.get_step_metrics(metrics))

    def get_step_metrics(self, metrics: PyTree) -> dict[str, np.ndarray]:
        """Metrics of every step of a call (device 0's copy): (steps_per_call,) per name."""
        return {k: np.asarray(v[0], np.float64).reshape(self.steps_per_call) for k, v in
                jax.device_get(metrics).items()}


def make_driver(name: str, step: Step, devices: Sequence[jax.Device] | None = None,
                donate: bool = True, steps_per_call: int = 1, unroll: bool = True
                ) -> ShardMapDriver | PmapDriver:
    """The driver named by `train.driver`; `steps_per_call` and `unroll` as in `fuse_steps`."""
    if name == "shard_map":
        return ShardMapDriver(step, make_mesh(devices), donate=donate,
                              steps_per_call=steps_per_call, unroll=unroll)
    if name == "pmap":
        return PmapDriver(step, devices, donate=donate, steps_per_call=steps_per_call,
                          unroll=unroll)
    raise ParallelError(f"unknown driver {name!r}; choose 'shard_map' or 'pmap'")
