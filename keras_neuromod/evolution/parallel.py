"""Evaluating many genomes at once: serially, in local processes, or on Ray.

Every backend runs the same job, `evaluate_job(fitness, job)`, where `fitness` is
a `FitnessTask` or a picklable function `f(genome, architecture, seed) -> float`
and `job` is plain data (a genome dict, an architecture, a seed): workers never
see DEAP classes. A job that raises, whose worker dies, or (with a `timeout`)
whose worker gives no answer in time (the worker is then killed) is run once
more; if that fails too, it scores the fitness's worst value and the evolution
goes on. Results come back in the order of the jobs, whatever order the
workers finish in, so the evolution is the same on every backend.

An error of the task itself (`fitness.TaskError`: its data, its models, the
reference's training) is not retried: `map` raises it at once, with the worker's
traceback, and so stops an evolution. So does a worker process that cannot start
(a script without an ``if __name__ == "__main__":`` guard, a task definition that
cannot be rebuilt in the worker), with what the worker printed.

Workers get the fitness and the definitions of the suite's tasks and models
(`tasks.definitions`) serialized with cloudpickle (Ray's own for Ray actors):
tasks and fitness functions defined in a notebook, a `python -c` command or
inside a script's main guard evaluate in workers as they do here.

Workers start quiet: TensorFlow's start-up notices (oneDNN, CUDA probing) and
its C++ log lines stay out of the parent's output (`TF_CPP_MIN_LOG_LEVEL=3` in
the workers). A failing job's error reaches the parent's warning, with its
traceback when it is scored worst.
"""

import contextlib
import dataclasses
import math
import multiprocessing
import os
import pickle
import resource
import sys
import tempfile
import time
import traceback
import warnings

from keras_neuromod import _fields
from keras_neuromod.evolution.fitness import TaskError

__all__ = [
    "make_backend",
    "evaluate_job",
    "check_trainable",
    "check_not_all_failed",
    "in_spawned_start",
    "SerialBackend",
    "ProcessBackend",
    "RayBackend",
    "VectorizedBackend",
    "BACKENDS",
    "TaskError",
]

_EVALUATORS = {}

# Set in every worker's environment before TensorFlow is imported there.
WORKER_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3"}


def _check_timeout(timeout):
    if timeout is None:
        return None
    if not _fields.is_number(timeout) or not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}.")
    return float(timeout)


def _worst(fitness, job=None):
    worst = float(getattr(fitness, "worst_fitness", 0.0))
    if job is not None and "genomes" in job:
        return [worst] * len(job["genomes"])
    return worst


def _answer(value):
    """A job's answer: a float, or a chunk's list of floats."""
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return float(value)


def _size(job):
    """Individuals in a job: a chunk's genomes, or one."""
    return len(job["genomes"]) if "genomes" in job else 1


def _evaluator(key, make):
    """The cached evaluator of `key`, made (loading the task's data) on first use."""
    if key not in _EVALUATORS:
        from keras_neuromod.evolution.fitness import task_step

        _EVALUATORS.clear()
        with task_step("preparing the evaluation (loading the task's data)"):
            _EVALUATORS[key] = make()
    return _EVALUATORS[key]


def _definitions(fitness):
    """What workers need besides the fitness: the definitions of a suite's tasks and models."""
    from keras_neuromod.evolution.suite import SuiteTask

    if isinstance(fitness, SuiteTask):
        from keras_neuromod import tasks

        return tasks.definitions(fitness.tasks)
    return None


def _payload(fitness):
    """The fitness and its task definitions, serialized for the workers (cloudpickle).

    Functions defined where pickle cannot find them again (a notebook, `python
    -c`, a script's main guard) travel by value.
    """
    import cloudpickle

    try:
        return cloudpickle.dumps((fitness, _definitions(fitness)))
    except Exception as error:  # noqa: BLE001 - said with what cannot be sent
        raise TaskError(
            f"The fitness or the task definitions cannot be sent to the worker processes "
            f"({type(error).__name__}: {error}). Define the task's data function and model "
            "builders with plain functions (no open files, locks or generators in their closures)."
        ) from error


def _install(fitness, found):
    """The worker's side: `found` (task definitions, or None) registered here; the fitness."""
    if found:
        from keras_neuromod import tasks

        tasks.install(found)
    return fitness


def _summary(error):
    """`Type: first line of the message`, without notes (JAX's note on filtered frames)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _task_failure(where, details):
    return TaskError(
        f"The task cannot be evaluated ({where}); this is not an individual's failure, so the "
        f"run stops.\n{details.rstrip()}"
    )


def in_spawned_start():
    """True while a spawned worker process imports the parent's main module.

    A script that starts an evolution without an ``if __name__ ==
    "__main__":`` guard starts it again there.
    """
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def evaluate_job(fitness, job):
    """Evaluate one job in this process (caching one evaluator per task).

    A job is one individual (`{"genome", "architecture", "seed"}`), evaluated
    with `model.fit` (`Evaluator`) or by `fitness` itself, or a chunk of the
    population (`{"genomes", "architecture", "seed", "vmap", "scan",
    "width"}`), trained by a `VectorizedEvaluator` and answered with a list.
    """
    from keras_neuromod.evolution.fitness import Evaluator
    from keras_neuromod.evolution.fitness import FitnessTask
    from keras_neuromod.evolution.suite import SuiteTask

    architecture, seed = job["architecture"], job["seed"]
    check_trainable(fitness, vectorized="genomes" in job)
    if "genomes" in job:
        from keras_neuromod.evolution.suite import SuiteEvaluator
        from keras_neuromod.evolution.vectorized import VectorizedEvaluator

        options = {name: job[name] for name in ("vmap", "scan", "width")}
        kind = SuiteEvaluator if isinstance(fitness, SuiteTask) else VectorizedEvaluator
        evaluator = _evaluator(
            ("vectorized", repr(fitness), repr(sorted(options.items()))),
            lambda: kind(fitness, **options),
        )
        return [float(v) for v in evaluator.evaluate_many(job["genomes"], architecture, seed)]
    genome = job["genome"]
    if isinstance(fitness, FitnessTask):
        evaluator = _evaluator(("fit", repr(fitness)), lambda: Evaluator(fitness))
        return float(evaluator.evaluate(genome, architecture, seed))
    return float(fitness(genome, architecture, seed))


def _timed_job(fitness, job):
    """`evaluate_job`'s answer, and the CPU seconds this process spent on it (all its threads)."""
    start = time.process_time()
    value = _answer(evaluate_job(fitness, job))
    return value, time.process_time() - start


def check_trainable(fitness, vectorized):
    """Refuse a fitness that the chosen kind of evaluation cannot train.

    A `SuiteTask` trains vectorized only (its instances against the Keras
    baseline); vectorized evaluation trains a `FitnessTask` or a `SuiteTask`,
    not a fitness function.

    Args:
        fitness: a `FitnessTask`, a `SuiteTask` or a fitness function.
        vectorized: whether the evaluation is vectorized (the ``"vectorized"``
            backend, or ``"ray"`` with `vectorized=True`).

    Raises:
        ValueError: saying which backend trains `fitness`.
    """
    from keras_neuromod.evolution.fitness import FitnessTask
    from keras_neuromod.evolution.suite import SuiteTask

    if isinstance(fitness, SuiteTask) and not vectorized:
        raise ValueError(
            "A SuiteTask trains vectorized: use backend='vectorized' (or 'ray' with "
            "vectorized=True)."
        )
    if vectorized and not isinstance(fitness, (FitnessTask, SuiteTask)):
        raise ValueError(
            "Vectorized evaluation trains a FitnessTask or a SuiteTask; a fitness "
            "function needs the 'serial', 'process' or 'ray' backend."
        )


def check_not_all_failed(backend, what="evaluation"):
    """Raise a `TaskError` if every job of `backend`'s last `map` failed (each twice).

    One individual that crashes its worker scores worst and the run goes on;
    when none could be evaluated at all, the task, the fitness or the
    environment is broken, and scoring them all worst would hide it.
    """
    failures, jobs = getattr(backend, "failures", []), getattr(backend, "mapped", 0)
    if jobs and len(failures) == jobs:
        raise _task_failure(
            f"every {what} failed, twice; the first error follows", str(failures[0])
        )


class _Retries:
    """The policy of every backend for a failed job: run it once more, then score it worst.

    One `map`'s bookkeeping: the jobs still to run (a failed job goes first
    again), the results in the order of the jobs, and the errors of the jobs
    that failed twice (`failures`, read by `check_not_all_failed`). A backend
    takes `next()` job when a worker is free and reports `succeeded` or
    `failed`; each failure is warned about, with the worker's traceback when
    the job is scored worst.

    Args:
        jobs: the jobs of the `map`.
        fitness: the fitness (its `worst_fitness`, 0.0 when it has none).
        progress: called with the individuals of each job done, or None.
    """

    ATTEMPTS = 2

    def __init__(self, jobs, fitness, progress=None):
        self.jobs, self.fitness, self.progress = jobs, fitness, progress
        self.results = [None] * len(jobs)
        self.attempts = [0] * len(jobs)
        self.pending = list(range(len(jobs)))
        self.failures = []
        self.done = 0

    @property
    def finished(self):
        """Whether every job has its result (its value, or the worst)."""
        return self.done == len(self.jobs)

    def next(self):
        """The index of the next job to run (one more attempt counted), or None."""
        if not self.pending:
            return None
        index = self.pending.pop(0)
        self.attempts[index] += 1
        return index

    def succeeded(self, index, value):
        """Job `index` answered `value` (a float, or a chunk's list)."""
        self.results[index] = _answer(value)
        self._done(index)

    def failed(self, index, reason, details=None):
        """Job `index` failed (`reason`: one line; `details`: the traceback): again, or worst."""
        final = self.attempts[index] >= self.ATTEMPTS
        what = "scored worst" if final else "run again"
        tail = f"\n{details.rstrip()}" if final and details else ""
        warnings.warn(
            f"Evaluating an individual failed ({reason}); it is {what}.{tail}",
            RuntimeWarning,
            stacklevel=2,
        )
        if not final:
            self.pending.insert(0, index)
            return
        self.results[index] = _worst(self.fitness, self.jobs[index])
        self.failures.append(details or reason)
        self._done(index)

    def _done(self, index):
        self.done += 1
        if self.progress:
            self.progress(_size(self.jobs[index]))


class SerialBackend:
    """Evaluate in this process, one job after the other."""

    name = "serial"
    workers = 1

    def __init__(self, fitness, threads=None):
        self.fitness = fitness
        self.failures, self.mapped = [], 0
        self.cpu_seconds = 0.0
        _set_threads(threads)

    def map(self, jobs, progress=None):
        """The fitness of every job, in order (a job that fails twice scores worst)."""
        retries = _Retries(jobs, self.fitness, progress)
        self.failures, self.mapped = retries.failures, len(jobs)
        while not retries.finished:
            index = retries.next()
            try:
                value, cpu = _timed_job(self.fitness, jobs[index])
            except TaskError:
                raise
            except Exception as error:  # noqa: BLE001 - a failed job is run again, then scored worst
                retries.failed(index, _summary(error), traceback.format_exc(limit=-4))
            else:
                self.cpu_seconds += cpu
                retries.succeeded(index, value)
        return retries.results

    def close(self):
        pass


def _set_threads(threads):
    if not threads or os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return  # TensorFlow's threads only (a JAX worker does not import it)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))
    except (ImportError, RuntimeError):
        pass  # already initialised, or another backend: keep its settings


class _InheritedDescriptor:
    """A file descriptor handed to a spawned worker (duplicated when pickled)."""

    def __init__(self, fd):
        self.fd = fd

    def __reduce__(self):
        from multiprocessing import reduction

        return _rebuild_descriptor, (reduction.DupFd(self.fd),)


def _rebuild_descriptor(duplicate):
    return _InheritedDescriptor(duplicate.detach())


@contextlib.contextmanager
def _quiet_start(start_log, extra=None):
    """Start child processes with `WORKER_ENVIRONMENT` (and `extra`) and stderr into `start_log`.

    TensorFlow writes its start-up notices to file descriptor 2 before any log
    level applies, while the child imports it (the main module's imports,
    the job's function): only a child started with its descriptor 2 elsewhere
    stays quiet. The child puts its real stderr back once started; if it dies
    before, `start_log` (a file) holds what it wrote, its error included.
    """
    wanted = dict(WORKER_ENVIRONMENT, **(extra or {}))
    environment = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    saved = os.dup(2)
    try:
        os.dup2(start_log.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _worker_main(connection, payload, threads, stderr=None):
    try:
        _set_threads(threads)  # imports TensorFlow while stderr is still silenced
        fitness = _install(*pickle.loads(payload))
    except BaseException:  # noqa: BLE001 - the parent raises it
        connection.send((None, "start_error", traceback.format_exc()))
        return
    if stderr is not None:
        os.dup2(stderr.fd, 2)
        os.close(stderr.fd)
    connection.send((None, "ready", None))
    while True:
        try:
            message = connection.recv()
        except EOFError:
            return
        if message is None:
            return
        index, job = message
        try:
            value, cpu = _timed_job(fitness, job)
            # peak resident memory in MiB (Linux reports KiB)
            memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            connection.send((index, "ok", (value, memory, cpu)))
        except TaskError:
            connection.send((index, "task_error", traceback.format_exc()))
        except Exception as error:  # noqa: BLE001 - reported to the parent
            connection.send((index, "error", (_summary(error), traceback.format_exc(limit=-4))))


class ProcessBackend:
    """A pool of local worker processes (spawn start method).

    Each worker keeps its compiled models between jobs. A worker that dies
    loses only the job it was running (which is run once more, then scored
    worst); a fresh worker replaces it. So does a worker that gives no answer
    within `timeout` seconds (stuck, or stopped): it is killed. Fitting many
    models in one process grows TensorFlow's memory, so a worker is recycled
    once its peak memory passes `max_worker_memory` MiB or after
    `max_jobs_per_worker` jobs.

    Args:
        fitness: a `FitnessTask` or a picklable fitness function.
        workers: number of processes (default: the CPU count).
        threads: TensorFlow threads per worker (default: CPUs / workers).
        max_jobs_per_worker: recycle a worker after this many jobs.
        max_worker_memory: recycle a worker whose peak resident memory
            passed this many MiB.
        timeout: seconds one job may take in a worker, counted from the
            moment a started worker has it (a fresh worker's start-up, that
            is importing TensorFlow, is not counted; building and compiling
            the job's model is). None (the default): no limit.
        environment: more environment variables for the workers (e.g.
            ``{"KERAS_BACKEND": "jax"}``), set before they import anything.
    """

    name = "process"

    def __init__(
        self,
        fitness,
        workers=None,
        threads=None,
        max_jobs_per_worker=500,
        max_worker_memory=4096,
        timeout=None,
        environment=None,
    ):
        self.fitness = fitness
        self.environment = dict(environment or {})
        self.workers = int(workers or os.cpu_count() or 1)
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers!r}.")
        self.timeout = _check_timeout(timeout)
        self.threads = threads or max(1, (os.cpu_count() or 1) // self.workers)
        self.max_jobs_per_worker = max_jobs_per_worker
        self.max_worker_memory = max_worker_memory
        self._context = multiprocessing.get_context("spawn")
        self._payload = _payload(fitness)
        self._pool = [None] * self.workers
        self.failures, self.mapped = [], 0
        self.cpu_seconds = 0.0

    def _start(self, slot):
        parent, child = self._context.Pipe()
        stderr = _InheritedDescriptor(os.dup(2))
        start_log = tempfile.TemporaryFile()
        process = self._context.Process(
            target=_worker_main, args=(child, self._payload, self.threads, stderr), daemon=True
        )
        try:
            with _quiet_start(start_log, self.environment):
                process.start()
        finally:
            os.close(stderr.fd)
        child.close()
        self._pool[slot] = _Worker(process, parent, start_log)

    def _stop(self, slot):
        if self._pool[slot] is not None:
            self._pool[slot].stop()
            self._pool[slot] = None

    def _time_left(self, busy):
        """Seconds until the first running job passes the timeout (None: no limit)."""
        started = [w.since for w in busy if w.since is not None]
        if self.timeout is None or not started:
            return None
        return max(0.0, min(started) + self.timeout - time.monotonic())

    def map(self, jobs, progress=None):
        """The fitness of every job, in order (a job that fails twice scores worst).

        Raises:
            TaskError: the task itself failed, or a worker could not start.
        """
        from multiprocessing.connection import wait

        retries = _Retries(jobs, self.fitness, progress)
        self.failures, self.mapped = retries.failures, len(jobs)
        while not retries.finished:
            self._hand_out(retries)
            busy = [w for w in self._pool if w is not None and w.job is not None]
            ready = wait(
                [w.connection for w in busy] + [w.process.sentinel for w in busy],
                timeout=self._time_left(busy),
            )
            for slot, worker in enumerate(self._pool):
                if worker is not None and worker.job is not None:
                    self._collect(slot, worker, ready, retries)
        return retries.results

    def _hand_out(self, retries):
        """Give every idle worker the next job, starting workers where none (or a dead one) is."""
        for slot in range(self.workers):
            worker = self._pool[slot]
            # A dead worker that was running a job is left for `wait` (its sentinel
            # is ready): replacing it here would lose the job.
            if worker is None or (worker.job is None and not worker.process.is_alive()):
                self._stop(slot)
                self._start(slot)
                worker = self._pool[slot]
            if worker.job is None and retries.pending:
                index = retries.next()
                worker.send(index, retries.jobs[index])

    def _collect(self, slot, worker, ready, retries):
        """Take what the busy worker in `slot` has to say: a message, its death, or its timeout."""
        index = worker.job
        if worker.connection in ready:
            self._receive(slot, worker, retries)
            return
        if worker.process.sentinel in ready:
            if not worker.ready:
                raise self._start_failure(worker)
            worker.process.join()
            failure = f"worker exited with code {worker.process.exitcode}"
        elif worker.timed_out(self.timeout):
            worker.process.kill()  # also ends a stopped (SIGSTOP) process
            worker.process.join()
            failure = f"no answer within {self.timeout:g} s; its worker was killed"
        else:
            return
        self._stop(slot)
        retries.failed(index, failure)

    def _receive(self, slot, worker, retries):
        """Handle the message of `worker`: ready, an answer, an error, or the worker's end."""
        index = worker.job
        status, value = worker.receive()
        if status == "ready":
            return
        if status == "start_error" or (status == "died" and not worker.ready):
            raise self._start_failure(worker, value if status == "start_error" else None)
        if status == "task_error":
            raise _task_failure("its worker's traceback follows", value)
        worker.job = None
        if status == "ok":
            answer, memory, cpu = value
            self.cpu_seconds += cpu
            retries.succeeded(index, answer)
            worker.jobs += 1
            if worker.jobs >= self.max_jobs_per_worker or memory > self.max_worker_memory:
                self._stop(slot)
        elif status == "error":
            retries.failed(index, *value)  # its summary and traceback
        else:  # died
            self._stop(slot)
            retries.failed(index, value)

    def _start_failure(self, worker, details=None):
        """The `TaskError` of a worker that died (or failed) before it was ready."""
        if details is None:
            details = worker.last_words()
        hint = ""
        if "bootstrapping phase" in details and "main guard" not in details:
            hint = (
                "\nEach worker process imports the script that started it: put the code "
                'that runs the evolution under `if __name__ == "__main__":`.'
            )
        return _task_failure("a worker process could not start", details + hint)

    def close(self):
        for slot in range(self.workers):
            self._stop(slot)


@dataclasses.dataclass
class _Worker:
    """One worker process of a `ProcessBackend`, as the parent sees it.

    Attributes:
        process: the `multiprocessing` process.
        connection: the parent's end of its pipe.
        start_log: the file that holds what it wrote while it started.
        jobs: jobs it finished (it is recycled after `max_jobs_per_worker`).
        job: the index of the job it runs, or None when idle.
        ready: whether it has started (imported TensorFlow, rebuilt the task).
        since: when its clock started on the job (`time.monotonic()`; None
            until it is ready).
    """

    process: object
    connection: object
    start_log: object
    jobs: int = 0
    job: int = None
    ready: bool = False
    since: float = None

    def send(self, index, job):
        """Give it job `index`; the clock runs once it has started."""
        self.job = index
        self.since = time.monotonic() if self.ready else None
        self.connection.send((index, job))

    def receive(self):
        """Its message as `(status, value)`; ``("died", why)`` when its pipe is closed.

        A ``"ready"`` message starts the clock of the job it holds.
        """
        try:
            _, status, value = self.connection.recv()
        except (EOFError, OSError):
            self.process.join(timeout=5)
            return "died", f"worker exited with code {self.process.exitcode}"
        if status == "ready":
            self.ready = True
            self.since = time.monotonic()
        return status, value

    def timed_out(self, timeout):
        """Whether its job has run for `timeout` seconds (never without a timeout)."""
        return (
            timeout is not None
            and self.since is not None
            and time.monotonic() - self.since >= timeout
        )

    def last_words(self):
        """Its exit code and the end of what it wrote while starting."""
        self.process.join(timeout=5)
        log = self.start_log
        log.seek(0, os.SEEK_END)
        log.seek(max(0, log.tell() - 16384))
        lines = log.read().decode(errors="replace").splitlines()[-30:]
        return (
            f"The worker exited with code {self.process.exitcode}; the end of "
            "its output:\n" + "\n".join(lines)
        )

    def stop(self):
        """Ask it to end (killed if it does not within 5 s) and close its pipe and log."""
        try:
            self.connection.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()
        self.start_log.close()


def _ray_actor_class():
    import ray

    @ray.remote(num_cpus=1, max_restarts=-1)
    class Worker:
        def __init__(self, fitness, found, threads):
            _set_threads(threads)
            self.fitness = _install(fitness, found)

        def ready(self):
            return True

        def evaluate(self, job):
            return _timed_job(self.fitness, job)

    return Worker


class RayBackend:
    """Evaluate on a Ray cluster: a local one, or one you join.

    An actor that dies loses only the job it was running (which is run once
    more, then scored worst); Ray restarts it, and it gets jobs again once it
    answers (one not back within `RESTART_SECONDS` is given up, with a
    warning). An actor that gives no answer within `timeout` seconds is killed
    (`ray.kill`, restarted by Ray) and its job treated the same way.

    Args:
        fitness: a `FitnessTask` or a picklable fitness function.
        workers: number of actors (default: the cluster's CPUs).
        address: None starts a local cluster on this machine; ``"auto"`` or an
            address (``"ray://host:10001"``) joins an existing one.
        threads: TensorFlow threads per actor (default 1).
        timeout: seconds one job may take on an actor, counted from the
            moment a started actor has it (an actor's start-up is not
            counted). None (the default): no limit.
        environment: more environment variables for the actors (e.g.
            ``{"KERAS_BACKEND": "jax"}``).
    """

    name = "ray"
    # An actor that died is pinged until it answers (Ray restarts it: a fresh worker
    # imports TensorFlow, which takes a while on a loaded machine), every
    # PING_SECONDS, and given up once RESTART_SECONDS pass without an answer.
    PING_SECONDS = 0.5
    RESTART_SECONDS = 300.0

    def __init__(
        self, fitness, workers=None, address=None, threads=1, timeout=None, environment=None
    ):
        self.timeout = _check_timeout(timeout)
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
                    num_cpus=workers or os.cpu_count(),
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
                self._started_here = True
            else:
                ray.init(address=address, log_to_driver=False)
        self.workers = int(workers or ray.cluster_resources().get("CPU", 1))
        self.fitness = fitness
        worker_class = _ray_actor_class().options(
            runtime_env={"env_vars": dict(WORKER_ENVIRONMENT, **(environment or {}))}
        )
        # Ray sends them with its cloudpickle (by value from a notebook or `python -c`)
        found = _definitions(fitness)
        self.failures, self.mapped = [], 0
        self.cpu_seconds = 0.0
        self._actors = [worker_class.remote(fitness, found, threads) for _ in range(self.workers)]
        # An actor gets jobs once it answers a ping: after its start, and
        # after each failure (Ray restarts a dead actor).
        self._idle = []
        self._pinging = {}
        self._down_since = {}  # actor: when its first ping since a failure failed
        for actor in range(self.workers):
            self._ping(actor)

    def _ping(self, actor):
        self._pinging[self._actors[actor].ready.remote()] = actor

    def _answered(self, reference):
        actor = self._pinging.pop(reference)
        try:
            self._ray.get(reference)
        except self._ray.exceptions.RayActorError as error:
            down_since = self._down_since.setdefault(actor, time.monotonic())
            if time.monotonic() - down_since < self.RESTART_SECONDS:
                time.sleep(self.PING_SECONDS)  # still restarting: ask again shortly
                self._ping(actor)
            else:
                warnings.warn(
                    f"A Ray worker is gone ({type(error).__name__}); the others go on.",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return
        self._down_since.pop(actor, None)
        self._idle.append(actor)

    def _time_left(self, running):
        if self.timeout is None or not running:
            return None
        first = min(started for _, _, started in running.values())
        return max(0.0, first + self.timeout - time.monotonic())

    def map(self, jobs, progress=None):
        """The fitness of every job, in order (a job that fails twice scores worst).

        Raises:
            TaskError: the task itself failed.
            RuntimeError: no actor is left.
        """
        retries = _Retries(jobs, self.fitness, progress)
        self.failures, self.mapped = retries.failures, len(jobs)
        running = {}  # reference: (actor, job index, start)
        while not retries.finished:
            while self._idle and retries.pending:
                actor, index = self._idle.pop(0), retries.next()
                reference = self._actors[actor].evaluate.remote(jobs[index])
                running[reference] = (actor, index, time.monotonic())
            if not running and not self._pinging:
                raise RuntimeError("No Ray worker is left to evaluate the individuals.")
            finished, _ = self._ray.wait(
                list(running) + list(self._pinging), num_returns=1, timeout=self._time_left(running)
            )
            for reference in finished:
                if reference in self._pinging:
                    self._answered(reference)
                else:
                    self._collect(reference, *running.pop(reference)[:2], retries)
            self._kill_late(running, retries)
        return retries.results

    def _collect(self, reference, actor, index, retries):
        """The answer of job `index` from `actor` (a failure: the actor is pinged back)."""
        try:
            value, cpu = self._ray.get(reference)
        except TaskError as error:  # Ray's RayTaskError is also an instance of its cause
            raise _task_failure("its worker's traceback follows", str(error)) from None
        except Exception as error:  # noqa: BLE001 - RayActorError, RayTaskError
            self._ping(actor)  # a dead actor is back once it answers
            cause = getattr(error, "cause", None)
            retries.failed(
                index, _summary(cause) if cause is not None else type(error).__name__, str(error)
            )
            return
        self._idle.append(actor)
        self.cpu_seconds += cpu
        retries.succeeded(index, value)

    def _kill_late(self, running, retries):
        """Kill the actors whose job passed the timeout (Ray restarts them); their jobs failed."""
        now = time.monotonic()
        for reference, (actor, index, started) in list(running.items()):
            if self.timeout is not None and now - started >= self.timeout:
                del running[reference]
                self._ray.kill(self._actors[actor], no_restart=False)  # Ray restarts it
                self._ping(actor)
                retries.failed(index, f"no answer within {self.timeout:g} s; its worker was killed")

    def close(self):
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []
        if self._started_here:
            self._ray.shutdown()


class VectorizedBackend:
    """Train the population in compiled, batched JAX calls, chunk by chunk.

    The jobs of a generation (one architecture, one seed) are cut into even
    chunks, one per worker; a worker trains its chunk with a
    `VectorizedEvaluator`. The workers are this process (when it runs Keras on
    JAX and `workers` is 1), local processes started with `KERAS_BACKEND=jax`
    (whatever backend this process uses), or Ray actors. A chunk that fails is
    run once more, then its individuals score worst, as a failed job of the other backends.
    Every individual's fitness
    is the same whichever worker trains it and however many there are.

    Args:
        fitness: the `FitnessTask`.
        workers: chunks evaluated in parallel (default: the CPU count for
            local processes, the cluster's CPUs on Ray). XLA runs much of a
            small model's training on one thread, so one worker per core is
            faster than one worker with every core
            (`benchmarks/evolution_throughput.py`).
        place: ``"local"`` (this process or local processes) or ``"ray"``.
        vmap, scan, width: the `VectorizedEvaluator`'s options.
        ray_address: with ``place="ray"``, as `RayBackend`'s `address`.
        timeout: seconds one chunk may take in a worker (local processes
            or Ray; None: no limit).
    """

    name = "vectorized"

    def __init__(
        self,
        fitness,
        workers=None,
        place="local",
        vmap=None,
        scan=None,
        width=None,
        ray_address=None,
        timeout=None,
    ):
        from keras_neuromod.evolution.vectorized import DEFAULT_WIDTH

        check_trainable(fitness, vectorized=True)
        self.fitness = fitness
        self.options = {
            "vmap": vmap,
            "scan": scan,
            "width": _fields.integer(DEFAULT_WIDTH if width is None else width, "width", minimum=1),
        }
        jax = {"KERAS_BACKEND": "jax"}
        if place == "ray":
            self._inner = RayBackend(
                fitness,
                workers=workers,
                address=ray_address,
                threads=None,
                timeout=timeout,
                environment=jax,
            )
        elif place == "local":
            import keras

            workers = int(workers or os.cpu_count() or 1)
            if workers == 1 and timeout is None and keras.backend.backend() == "jax":
                self._inner = SerialBackend(fitness)
            else:
                self._inner = ProcessBackend(
                    fitness, workers=workers, timeout=timeout, environment=jax
                )
        else:
            raise ValueError(f"place must be 'local' or 'ray', got {place!r}.")
        self.workers = self._inner.workers

    def chunks(self, jobs):
        """The chunk jobs for `jobs`, and the slice of `jobs` each covers."""
        chunks, spans = [], []
        start = 0
        while start < len(jobs):
            key = (jobs[start]["architecture"], jobs[start]["seed"])
            stop = start
            while stop < len(jobs) and (jobs[stop]["architecture"], jobs[stop]["seed"]) == key:
                stop += 1
            size = -(-(stop - start) // self.workers)  # an even share per worker
            for first in range(start, stop, size):
                last = min(first + size, stop)
                chunks.append(
                    dict(
                        genomes=[job["genome"] for job in jobs[first:last]],
                        architecture=key[0],
                        seed=key[1],
                        **self.options,
                    )
                )
                spans.append((first, last))
            start = stop
        return chunks, spans

    @property
    def failures(self):
        """The errors of the chunks that failed twice in the last `map` (their individuals
        scored worst)."""
        return self._inner.failures

    @property
    def mapped(self):
        """Chunks in the last `map`."""
        return self._inner.mapped

    @property
    def cpu_seconds(self):
        """The CPU seconds the workers spent on the chunks that answered, so far."""
        return self._inner.cpu_seconds

    def map(self, jobs, progress=None):
        chunks, spans = self.chunks(jobs)
        answers = self._inner.map(chunks, progress=progress)
        results = [None] * len(jobs)
        for (first, last), values in zip(spans, answers):
            results[first:last] = values
        return results

    def close(self):
        self._inner.close()


BACKENDS = ("vectorized", "process", "serial", "ray")


def make_backend(
    backend,
    fitness,
    workers=None,
    ray_address=None,
    timeout=None,
    vectorized=False,
    **vectorized_options,
):
    """Build the backend named `backend` ('vectorized', 'process', 'serial' or 'ray').

    `timeout` (seconds per job, None for no limit) needs workers in other
    processes: the serial backend cannot stop a job running in its own
    process. `vectorized=True` with ``backend="ray"`` trains chunks of the
    population on the Ray actors with `VectorizedBackend` (``"vectorized"``
    alone does so in local processes); `vectorized_options` are its `vmap`,
    `scan` and `width`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}.")
    check_trainable(fitness, vectorized=backend == "vectorized" or vectorized)
    if backend == "vectorized" or vectorized:
        if backend not in ("vectorized", "ray"):
            raise ValueError(
                "vectorized=True goes with backend='ray'; use backend='vectorized' "
                "for local vectorized evaluation."
            )
        return VectorizedBackend(
            fitness,
            workers=workers,
            place="ray" if backend == "ray" else "local",
            ray_address=ray_address,
            timeout=timeout,
            **vectorized_options,
        )
    if vectorized_options:
        raise ValueError(f"{sorted(vectorized_options)} apply to vectorized evaluation only.")
    if backend == "serial":
        if timeout is not None:
            raise ValueError(
                "timeout needs the 'process' or the 'ray' backend: the serial backend "
                "cannot stop a job running in its own process."
            )
        return SerialBackend(fitness)
    if backend == "process":
        return ProcessBackend(fitness, workers=workers, timeout=timeout)
    return RayBackend(fitness, workers=workers, address=ray_address, timeout=timeout)
