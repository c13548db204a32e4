"""One trial: resolve -> build -> fit -> test, recorded by :mod:`ablate.tracking.recorder`.

- :mod:`.resolve`: the strings of a :class:`~ablate.config.RunConfig` become objects, once;
- :mod:`.run`: :func:`~.run.run_trial`, the one runner behind ``ablate run``, ``ablate
  finetune`` and every study worker (and :func:`~.run.train`: resolve + run_trial);
- :mod:`.loop`: the training loop (AdamW, warm-up + cosine, EMA, the alpha schedule);
- :mod:`.schedules`: alpha schedules; :mod:`.stopping`: stop signals between steps;
- :mod:`.sdpa_backend`: which SDPA kernel a model really runs.
"""
