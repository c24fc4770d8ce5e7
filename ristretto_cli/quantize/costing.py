"""The hardware cost (:mod:`ristretto_cli.cost`) of every configuration a search tried,
for the report: the float net, each scored candidate, and the chosen one layer by layer.

Each candidate is costed on the float net's structure with the formats its rewrite
writes (:func:`~.rewrite.rewrite_net`), so no net is built per candidate.
"""
from __future__ import annotations

from ..cost import EnergyTable, formats_from_param, net_cost
from .rewrite import Candidate, rewrite_net


def candidate_cost(float_net, param, candidate: Candidate | None, lengths, energy: EnergyTable | None = None):
    """The :class:`~ristretto_cli.cost.NetCost` of ``float_net`` in ``candidate``'s formats
    (None: the float net)."""
    if candidate is None:
        return net_cost(float_net, {}, energy)
    rewritten = rewrite_net(param, candidate, lengths)
    cost = net_cost(float_net, formats_from_param(rewritten), energy)
    types = {lp.name: lp.type for lp in rewritten.layer}
    for layer in cost.layers:  # the types the quantized prototxt names (ConvolutionRistretto, ...)
        layer.type = types.get(layer.name, layer.type)
    return cost


def search_costs(float_net, param, lengths, evaluations, final: Candidate | None, baseline: float,
                 energy: EnergyTable | None = None) -> dict:
    """JSON-ready: ``float`` (totals of the float net), ``evaluations`` (label, score and
    totals of each scored candidate, in order), ``final`` (the chosen configuration per
    layer and in total) and the energy table used."""
    energy = energy or EnergyTable()
    cache: dict = {}

    def totals(cand):
        if cand not in cache:
            cache[cand] = candidate_cost(float_net, param, cand, lengths, energy)
        return cache[cand]

    chosen = totals(final) if final is not None else None
    return {
        "float": {"label": "float", "score": float(baseline), **totals(None).summary()},
        "evaluations": [{"label": e.candidate.label(), "score": float(e.score), **totals(e.candidate).summary()}
                        for e in evaluations],
        "final": chosen.to_json() if chosen is not None else None,
        "energy_table": energy.to_json(),
    }


#: the objectives of the per-layer search -> the LayerCost figure each one sums
OBJECTIVE_FIGURES = {"bitops": "bitops", "weight-bits": "weight_bits", "energy": "energy_pj"}


def layer_objective(cost, objective: str) -> dict[str, float]:
    """Layer name -> the ``objective`` ("bitops", "weight-bits" or "energy" in pJ) of each
    layer of a :class:`~ristretto_cli.cost.NetCost`."""
    figure = OBJECTIVE_FIGURES[objective]
    return {l.name: float(getattr(l, figure)) for l in cost.layers}


def objective_costs(float_net, param, lengths, objective: str, energy: EnergyTable | None = None):
    """``layer_costs(candidate) -> {layer: objective}`` for the per-layer search (memoized)."""
    energy = energy or EnergyTable()
    cache: dict = {}

    def layer_costs(candidate: Candidate) -> dict[str, float]:
        if candidate not in cache:
            cache[candidate] = layer_objective(candidate_cost(float_net, param, candidate, lengths, energy),
                                               objective)
        return cache[candidate]

    return layer_costs
