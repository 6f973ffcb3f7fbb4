"""benchmarks/step_profile.py: device time attributed to the model's stages through the
compiled step's op_name metadata (the stages' jax.named_scope in jaxbrr/model.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_bench  # noqa: E402
import step_profile  # noqa: E402

STAGES = {"tcn", "node_mamba", "edge_weights"}


@pytest.mark.parametrize("op_name, expected", [
    ("jit(step)/jvp(tcn)/conv_general_dilated", ("tcn", "forward")),
    ("jit(step)/transpose(jvp(node_mamba))/dot_general", ("node_mamba", "backward")),
    ("jit(step)/jvp(edge_weights)/jit(cumsum)/reduce_window_sum", ("edge_weights", "forward")),
    ("jit(step)/transpose(jvp(remat(edge_weights)))/mul", ("edge_weights", "backward")),
    ("jit(step)/jvp(tcn_extra)/add", ("step", "forward")),  # a prefix of a stage name is not the stage
    ("jit(step)/add", ("step", "forward")),
    ("jit(step)/transpose(jvp(loss))/mul", ("step", "backward")),
])
def test_each_op_name_is_owned_by_its_stage_and_direction(op_name, expected):
    assert step_profile.stage_of(op_name, STAGES) == expected


def test_op_stages_reads_the_compiled_modules_text():
    text = '''HloModule jit_step, entry_computation_layout={()->f32[]}

%fused.7 (p.0: f32[2]) -> f32[2] {
  %p.0 = f32[2]{0} parameter(0)
  %mul.1 = f32[2]{0} multiply(%p.0, %p.0), metadata={op_name="jit(step)/jvp(edge_weights)/mul"}
  ROOT %reduce.2 = f32[2]{0} reduce(%mul.1, %c), metadata={op_name="jit(step)/transpose(jvp(gnn))/reduce_sum"}
}

ENTRY %main.9 (a: f32[2,3]) -> f32[2] {
  %fusion.3 = f32[2,3]{1,0} fusion(f32[2,3]{1,0} %p), kind=kLoop, calls=%fused.3, metadata={op_name="jit(step)/jvp(tcn)/add" source_file="x.py"}
  %dot.1 = f32[2,2]{1,0} dot(%a, %b), metadata={op_name="jit(step)/transpose(jvp(node_mamba))/dot_general"}
  %fusion.7 = f32[2]{0} fusion(%dot.1), kind=kCustom, calls=%fused.7, backend_config={}
  ROOT %copy.2 = f32[2]{0} copy(%c)
}
'''
    assert step_profile.op_stages(text, STAGES | {"gnn"}) == {
        "fusion.3": ("tcn", "forward", "jvp(tcn)/add"),
        "dot.1": ("node_mamba", "backward", "transpose(jvp(node_mamba))/dot_general"),
        # no op_name of its own: its computation's root's
        "fusion.7": ("gnn", "backward", "transpose(jvp(gnn))/reduce_sum"),
        "p.0": ("xla", "-", ""), "mul.1": ("edge_weights", "forward", "jvp(edge_weights)/mul"),
        "reduce.2": ("gnn", "backward", "transpose(jvp(gnn))/reduce_sum"),
        "copy.2": ("xla", "-", "")}
    assert step_profile.module_name(text) == "jit_step"


def test_breakdown_counts_device_events_when_there_are_any():
    owners = {"fusion.1": ("tcn", "forward", "conv"), "fusion.2": ("node_mamba", "backward", "dot")}
    gpu, host = "/device:GPU:0", "/host:CPU"
    events = [
        {"process": gpu, "name": "kernel_a", "dur": 300.0, "args": {"hlo_op": "fusion.1"}},
        {"process": gpu, "name": "kernel_b", "dur": 100.0, "args": {"hlo_op": "fusion.2"}},
        {"process": gpu, "name": "fusion_2", "dur": 100.0},  # a kernel named after its op, no args
        {"process": gpu, "name": "memcpy", "dur": 50.0},  # unattributed
        {"process": host, "name": "launch", "dur": 9000.0, "args": {"hlo_op": "fusion.1"}},  # host side: not counted
        {"process": gpu, "name": "k", "dur": 70.0, "args": {"hlo_op": "fusion.1", "hlo_module": "jit_convert"}},  # not ours
    ]
    result = step_profile.breakdown(events, owners, steps=2, module="jit_step")
    assert result["events"] == "device"
    assert result["attributed_ms_per_step"] == pytest.approx(0.25)  # 500 µs over 2 steps
    assert result["unattributed_ms_per_step"] == pytest.approx(0.025)
    assert result["ops_per_step"] == 1.5 and [r["ops_per_step"] for r in result["stages"]] == [0.5, 1.0]
    assert [(r["stage"], r["direction"], r["share"]) for r in result["stages"]] == [
        ("tcn", "forward", pytest.approx(0.6)), ("node_mamba", "backward", pytest.approx(0.4))]


@pytest.mark.slow
def test_a_real_tiny_step_is_attributed_to_its_stages_forward_and_backward():
    from common.config import load_config

    config = load_config(ROOT / "configs" / "tiny.yaml", ["train.batch_size=2"])
    result = step_profile.profile_train_step(config, gpu_bench._batch(config), steps=2)
    assert result["events"].startswith("host")
    assert result["cost"]["bytes"] > 0 and result["cost"]["flops"] > 0  # XLA's cost analysis, same executable
    assert result["traffic"] > 0 and result["planned_memory"] > 0  # gpu_aot.py's count and XLA's buffer plan
    # every op XLA:CPU ran is one the compiled module's text names
    assert result["unattributed_ms_per_step"] == 0
    seen = {(r["stage"], r["direction"]) for r in result["stages"]}
    assert {r["stage"] for r in result["stages"]} <= set(config.model.stage_inputs) | {step_profile.OTHER,
                                                                                     step_profile.COMPILER}
    # the scans carry most of the work: both Mamba stacks appear, forward and backward
    for stage in ("node_mamba", "edge_weights", "tcn"):
        assert {(stage, "forward"), (stage, "backward")} <= seen
    assert sum(r["share"] for r in result["stages"]) == pytest.approx(1.0)
    table = step_profile.table(result)
    assert "| node_mamba | backward |" in table and "longest ops" in table
