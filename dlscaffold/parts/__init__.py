"""The parts stage: the pieces a run is assembled from, each built from the checked config.

Owns the ``info_flow`` routing of tensors between the dataset, the models, the losses and evals
(``flow``), optimizers, schedules and parameter groups (``optim``), argument binding (``signatures``),
torchmetrics evals (``tm_metrics``), device placement (``device``), splits kept on the device
(``device_data``), precision and autocast (``precision``), data parallelism and the torchrun launch
(``distributed``), EMA models (``ema``), seeding (``seeding``), ``init_from_data`` (``init_data``)
and test-time augmentation (``tta``).

May import: ``errors``, ``losses``, ``modules``, ``config``, ``project``, ``records`` and ``data``.
"""
