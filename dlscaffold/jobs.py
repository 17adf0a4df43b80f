"""Where cluster jobs submitted by an earlier version of dlscaffold find their classes.

``dlscaffold submit`` pickles a job object; jobs pickled before the runtime moved into stage
folders name ``dlscaffold.jobs.TrainJob`` / ``dlscaffold.jobs.SweepWorkerJob``, so a job still
queued (or requeued) across an upgrade unpickles through this module. New jobs live in
:mod:`dlscaffold.experiments.jobs`.
"""

from dlscaffold.experiments.jobs import SweepWorkerJob, TrainJob

__all__ = ["SweepWorkerJob", "TrainJob"]
