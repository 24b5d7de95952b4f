"""The search core, torch only: everything a search is, with no Ray, MLflow, rich or typer.

A map (docs/architecture.md has the table):

- ``config``: SearchConfig and the presets; ``placement``, ``compiled``: device, autocast, torch.compile.
- ``seed``: one seed's search state (SeedSearch); ``checkpoint``, ``search_data``: its files and its data.
- ``search``: the one epoch loop, for K >= 1 seeds (SeedGroupSearcher; ``Searcher`` is one seed as a group of
  one); ``step``: the one search step over the seeds' stacked supernets (SearchStep); ``arch_grads``,
  ``stacking``, ``schedule``: the architecture gradients, stacked state, optimisers and streams it uses.
- ``strength``, ``criteria``, ``early_stop``: operation strength, the criterion registry, Algorithm 1.
- ``events``: EpochReport and the callback protocol the edges consume.
- ``coordinator``, ``consensus``, ``summaries``, ``journal``: the statistics across seeds.
- ``memory``, ``cost``, ``precision``, ``nb201_bench``: the memory guard, params and mult-adds, the bf16
  strength check, the NAS-Bench-201 table.
"""
