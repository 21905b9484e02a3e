"""Evaluating many genomes at once: serially, in local processes, or on Ray.

Every backend runs the same job, `evaluate_job(fitness, job)`, where `fitness` is
a `FitnessTask` or a picklable function `f(genome, architecture, seed) -> float`
and `job` is plain data (a genome dict, an architecture, a seed): workers never
see DEAP classes. A job that raises, or whose worker dies, is run once more;
if that fails too, it scores the fitness's worst value and the evolution goes
on. Results come back in the order of the jobs, whatever order the workers
finish in, so the evolution is the same on every backend.
"""

import multiprocessing
import os
import resource
import traceback
import warnings

__all__ = ["make_backend", "evaluate_job", "SerialBackend", "ProcessBackend", "RayBackend"]

_EVALUATORS = {}


def _worst(fitness):
    return float(getattr(fitness, "worst_fitness", 0.0))


def evaluate_job(fitness, job):
    """Evaluate one job in this process (caching one Evaluator per task)."""
    from keras_neuromod.evolution.fitness import Evaluator
    from keras_neuromod.evolution.fitness import FitnessTask

    genome, architecture, seed = job["genome"], job["architecture"], job["seed"]
    if isinstance(fitness, FitnessTask):
        key = repr(fitness)
        if key not in _EVALUATORS:
            _EVALUATORS.clear()
            _EVALUATORS[key] = Evaluator(fitness)
        return float(_EVALUATORS[key].evaluate(genome, architecture, seed))
    return float(fitness(genome, architecture, seed))


def _warn_failure(job, reason, final):
    what = "scored worst" if final else "run again"
    warnings.warn(
        f"Evaluating an individual failed ({reason}); it is {what}.", RuntimeWarning, stacklevel=3
    )


class SerialBackend:
    """Evaluate in this process, one job after the other."""

    name = "serial"
    workers = 1

    def __init__(self, fitness, threads=None):
        self.fitness = fitness
        _set_threads(threads)

    def map(self, jobs, progress=None):
        results = []
        for job in jobs:
            for attempt in (1, 2):
                try:
                    results.append(evaluate_job(self.fitness, job))
                    break
                except Exception as error:  # noqa: BLE001 - a failed job scores worst
                    _warn_failure(job, repr(error), final=attempt == 2)
                    if attempt == 2:
                        results.append(_worst(self.fitness))
            if progress:
                progress(1)
        return results

    def close(self):
        pass


def _set_threads(threads):
    if not threads:
        return
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))
    except (ImportError, RuntimeError):
        pass  # already initialised, or another backend: keep its settings


def _worker_main(connection, fitness, threads):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _set_threads(threads)
    while True:
        try:
            message = connection.recv()
        except EOFError:
            return
        if message is None:
            return
        index, job = message
        try:
            value = evaluate_job(fitness, job)
            # peak resident memory in MiB (Linux reports KiB)
            memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            connection.send((index, "ok", (value, memory)))
        except Exception:  # noqa: BLE001 - reported to the parent
            connection.send((index, "error", traceback.format_exc(limit=3)))


class ProcessBackend:
    """A pool of local worker processes (spawn start method).

    Each worker keeps its compiled models between jobs. A worker that dies
    loses only the job it was running (which is run once more, then scored
    worst); a fresh worker replaces it. Fitting many models in one process
    grows TensorFlow's memory, so a worker is recycled once its peak memory
    passes `max_worker_memory` MiB or after `max_jobs_per_worker` jobs.

    Args:
        fitness: a `FitnessTask` or a picklable fitness function.
        workers: number of processes (default: the CPU count).
        threads: TensorFlow threads per worker (default: CPUs / workers).
        max_jobs_per_worker: recycle a worker after this many jobs.
        max_worker_memory: recycle a worker whose peak resident memory
            passed this many MiB.
    """

    name = "process"

    def __init__(self, fitness, workers=None, threads=None, max_jobs_per_worker=500,
                 max_worker_memory=4096):
        self.fitness = fitness
        self.workers = int(workers or os.cpu_count() or 1)
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers!r}.")
        self.threads = threads or max(1, (os.cpu_count() or 1) // self.workers)
        self.max_jobs_per_worker = max_jobs_per_worker
        self.max_worker_memory = max_worker_memory
        self._context = multiprocessing.get_context("spawn")
        self._pool = [None] * self.workers

    def _start(self, slot):
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main, args=(child, self.fitness, self.threads), daemon=True
        )
        process.start()
        child.close()
        self._pool[slot] = {"process": process, "connection": parent, "jobs": 0, "busy": None}

    def _stop(self, slot):
        worker = self._pool[slot]
        if worker is None:
            return
        try:
            worker["connection"].send(None)
        except (OSError, BrokenPipeError):
            pass
        worker["process"].join(timeout=5)
        if worker["process"].is_alive():
            worker["process"].kill()
            worker["process"].join()
        worker["connection"].close()
        self._pool[slot] = None

    def map(self, jobs, progress=None):
        from multiprocessing.connection import wait

        results = [None] * len(jobs)
        attempts = [0] * len(jobs)
        pending = list(range(len(jobs)))
        done = 0
        while done < len(jobs):
            for slot in range(self.workers):
                worker = self._pool[slot]
                # A dead worker that was running a job is left for `wait` below
                # (its sentinel is ready): replacing it here would lose the job.
                if worker is None or (worker["busy"] is None and not worker["process"].is_alive()):
                    if worker is not None:
                        self._stop(slot)
                    self._start(slot)
                    worker = self._pool[slot]
                if worker["busy"] is None and pending:
                    index = pending.pop(0)
                    attempts[index] += 1
                    worker["busy"] = index
                    worker["connection"].send((index, jobs[index]))
            busy = [w for w in self._pool if w is not None and w["busy"] is not None]
            ready = wait([w["connection"] for w in busy] + [w["process"].sentinel for w in busy])
            for slot, worker in enumerate(self._pool):
                if worker is None or worker["busy"] is None:
                    continue
                index = worker["busy"]
                failure = None
                if worker["connection"] in ready:
                    try:
                        _, status, value = worker["connection"].recv()
                    except (EOFError, OSError):
                        worker["process"].join(timeout=5)
                        status = "died"
                        value = f"worker exited with code {worker['process'].exitcode}"
                    if status == "ok":
                        results[index], memory = value
                        worker["busy"] = None
                        worker["jobs"] += 1
                        done += 1
                        if progress:
                            progress(1)
                        if (worker["jobs"] >= self.max_jobs_per_worker
                                or memory > self.max_worker_memory):
                            self._stop(slot)
                        continue
                    failure = value
                    worker["busy"] = None
                    if status == "died":
                        self._stop(slot)
                elif worker["process"].sentinel in ready:
                    worker["process"].join()
                    failure = f"worker exited with code {worker['process'].exitcode}"
                    self._stop(slot)
                else:
                    continue
                final = attempts[index] >= 2
                _warn_failure(jobs[index], failure.strip().splitlines()[-1], final)
                if final:
                    results[index] = _worst(self.fitness)
                    done += 1
                    if progress:
                        progress(1)
                else:
                    pending.insert(0, index)
        return results

    def close(self):
        for slot in range(self.workers):
            self._stop(slot)


def _ray_actor_class():
    import ray

    @ray.remote(num_cpus=1, max_restarts=-1)
    class Worker:
        def __init__(self, fitness, threads):
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            _set_threads(threads)
            self.fitness = fitness

        def evaluate(self, job):
            return evaluate_job(self.fitness, job)

    return Worker


class RayBackend:
    """Evaluate on a Ray cluster: a local one, or one you join.

    Args:
        fitness: a `FitnessTask` or a picklable fitness function.
        workers: number of actors (default: the cluster's CPUs).
        address: None starts a local cluster on this machine; ``"auto"`` or an
            address (``"ray://host:10001"``) joins an existing one.
        threads: TensorFlow threads per actor (default 1).
    """

    name = "ray"

    def __init__(self, fitness, workers=None, address=None, threads=1):
        try:
            import ray
        except ImportError:
            raise ImportError(
                "The Ray backend needs Ray: `pip install keras_neuromod[ray]`."
            ) from None
        self._ray = ray
        self._started_here = False
        if not ray.is_initialized():
            if address is None:
                ray.init(
                    num_cpus=workers or os.cpu_count(), include_dashboard=False,
                    log_to_driver=False, configure_logging=False,
                )
                self._started_here = True
            else:
                ray.init(address=address, log_to_driver=False)
        self.workers = int(workers or ray.cluster_resources().get("CPU", 1))
        self.fitness = fitness
        worker_class = _ray_actor_class()
        self._actors = [worker_class.remote(fitness, threads) for _ in range(self.workers)]

    def map(self, jobs, progress=None):
        ray = self._ray
        results = [None] * len(jobs)
        attempts = [0] * len(jobs)
        pending = list(range(len(jobs)))
        running = {}
        idle = list(range(len(self._actors)))
        done = 0
        while done < len(jobs):
            while idle and pending:
                actor, index = idle.pop(0), pending.pop(0)
                attempts[index] += 1
                running[self._actors[actor].evaluate.remote(jobs[index])] = (actor, index)
            finished, _ = ray.wait(list(running), num_returns=1)
            for reference in finished:
                actor, index = running.pop(reference)
                idle.append(actor)
                try:
                    results[index] = float(ray.get(reference))
                except Exception as error:  # noqa: BLE001 - RayActorError, RayTaskError
                    final = attempts[index] >= 2
                    _warn_failure(jobs[index], type(error).__name__, final)
                    if not final:
                        pending.insert(0, index)
                        continue
                    results[index] = _worst(self.fitness)
                done += 1
                if progress:
                    progress(1)
        return results

    def close(self):
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []
        if self._started_here:
            self._ray.shutdown()


def make_backend(backend, fitness, workers=None, ray_address=None):
    """Build the backend named `backend` ('serial', 'process' or 'ray')."""
    if backend == "serial":
        return SerialBackend(fitness)
    if backend == "process":
        return ProcessBackend(fitness, workers=workers)
    if backend == "ray":
        return RayBackend(fitness, workers=workers, address=ray_address)
    raise ValueError(f"backend must be 'serial', 'process' or 'ray', got {backend!r}.")
