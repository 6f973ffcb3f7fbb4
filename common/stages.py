"""The model's topology, once: which stages exist, what each is computed from, which top-level
modules hold its parameters. Everything else derives from STAGES: ModelConfig.stage_inputs (the
graph both frameworks run), tap_names (the taps they return, in forward order), both models'
`stages()` and forward pass (`run_stages`), and the localiser's grouping of parameter gradients
by stage (`parameter_stages`).

    stage            inputs                          parameters                       exists for
    input            x                               -                                all
    tcn              input                           tcn                              all
    mamba            tcn                             mamba                            v2
    electrodes       tcn                             proj_to_electrodes               v3
    node_mamba       electrodes                      node_mamba                       v3
    edge_features    electrodes                      -                                v3, graph
    edge_weights     edge_features                   edge_lift, edge_mamba, edge_proj v3, graph
    adjacency        edge_weights                    -                                v3, graph
    pe               adjacency                       -                                v3, graph
    gnn              node_mamba, adjacency, pe       gnn                              v3, graph
    from_electrodes  gnn (graph) | node_mamba        proj_from_electrodes             v3
    logits           the stage before it             head                             all

Under model.precision bfloat16, input, edge_features, adjacency, pe and gnn still compute in float32
(FLOAT32_STAGES); the rest in bf16.

Framework-neutral: a stage is any callable, an array anything the callables take.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MODEL_INPUT = "x"  # the model's argument in the stage graph; every other name is a tap
PREVIOUS = "<previous>"  # an input that is whichever stage comes before (the head's)


@dataclass(frozen=True)
class Stage:
    name: str
    inputs: tuple[str, ...]
    parameters: tuple[str, ...] = ()  # top-level modules whose parameters this stage runs
    architectures: tuple[str, ...] = ("tcn", "v2", "v3")
    graph: bool | None = None  # True: only with model.graph.enabled; False: only without; None: either
    float32: bool = False  # under model.precision bfloat16, still computed in float32 (inputs upcast)


STAGES: tuple[Stage, ...] = (
    Stage("input", (MODEL_INPUT,), float32=True),
    Stage("tcn", ("input",), ("tcn",)),
    Stage("mamba", ("tcn",), ("mamba",), ("v2",)),
    Stage("electrodes", ("tcn",), ("proj_to_electrodes",), ("v3",)),
    Stage("node_mamba", ("electrodes",), ("node_mamba",), ("v3",)),
    Stage("edge_features", ("electrodes",), (), ("v3",), graph=True, float32=True),
    Stage("edge_weights", ("edge_features",), ("edge_lift", "edge_mamba", "edge_proj"), ("v3",), graph=True),
    Stage("adjacency", ("edge_weights",), (), ("v3",), graph=True, float32=True),
    Stage("pe", ("adjacency",), (), ("v3",), graph=True, float32=True),
    Stage("gnn", ("node_mamba", "adjacency", "pe"), ("gnn",), ("v3",), graph=True, float32=True),
    Stage("from_electrodes", ("gnn",), ("proj_from_electrodes",), ("v3",), graph=True),
    Stage("from_electrodes", ("node_mamba",), ("proj_from_electrodes",), ("v3",), graph=False),
    Stage("logits", (PREVIOUS,), ("head",)),
)

# model.precision bfloat16: the stages that compute in float32 all the same (similarities, the
# graph, the eigh PE and the GNN on it); both twins upcast these stages' inputs.
FLOAT32_STAGES: tuple[str, ...] = tuple(dict.fromkeys(stage.name for stage in STAGES if stage.float32))


def active_stages(architecture: str, graph_enabled: bool) -> list[Stage]:
    """The stages of one model, in forward order, with PREVIOUS resolved."""
    out: list[Stage] = []
    for stage in STAGES:
        if architecture not in stage.architectures:
            continue
        if stage.graph is not None and stage.graph != graph_enabled:
            continue
        inputs = tuple(out[-1].name if i == PREVIOUS else i for i in stage.inputs)
        out.append(dataclasses.replace(stage, inputs=inputs))
    return out


def stage_inputs(architecture: str, graph_enabled: bool) -> dict[str, tuple[str, ...]]:
    """tap name -> the taps it is computed from, in forward order (ModelConfig.stage_inputs)."""
    return {stage.name: stage.inputs for stage in active_stages(architecture, graph_enabled)}


def parameter_stages(architecture: str, graph_enabled: bool) -> dict[str, str]:
    """Top-level parameter module -> the stage that runs it."""
    return {module: stage.name for stage in active_stages(architecture, graph_enabled) for module in stage.parameters}


def run_stages(stages: dict[str, Callable[..., Any]], inputs: dict[str, tuple[str, ...]], x: Any,
               after: Callable[[str, Any], Any] | None = None) -> dict[str, Any]:
    """Every stage in order on the outputs it names (MODEL_INPUT is x): {tap: output}.
    `after(name, output)` may replace an output before later stages read it (the localiser adds
    its zero perturbations there)."""
    values = {MODEL_INPUT: x}
    for name, stage in stages.items():
        out = stage(*(values[i] for i in inputs[name]))
        values[name] = after(name, out) if after is not None else out
    del values[MODEL_INPUT]
    return values
